"""`afsd checks`: versions, devices, op backends and a self-test."""

from __future__ import annotations

import typer

from afsd_cli.commands._common import console, fail, handle_errors


def register(app: typer.Typer) -> None:
    @app.command("checks")
    @handle_errors
    def checks(
        seed: int = typer.Option(0, min=0, help="Seed of the self-test's random input."),
        repeats: int = typer.Option(5, min=1, help="Timed forward+backward calls per backend (median shown)."),
    ) -> None:
        """Report versions, devices and boundary-max-pool backends, and self-test them."""
        from afsd_cli.checks import device_rows, disagreeing_backends, version_rows

        console.print(_name_value_table("Versions", version_rows()))
        console.print(_name_value_table("Devices", device_rows()))
        _print_native_helpers()
        _print_boundary_pool_backends()
        results = _print_self_test(seed, repeats)
        broken = disagreeing_backends(results)
        if broken:
            raise fail(f"boundary_max_pool backends disagree with the reference rule: {', '.join(broken)}")
        console.print("[green]All loaded backends agree.[/]")


def _name_value_table(title: str, rows):
    from rich.table import Table

    table = Table(title=title, show_header=False)
    for name, value in rows:
        table.add_row(name, value)
    return table


def _print_native_helpers() -> None:
    from rich.table import Table

    from afsd_cli.checks import native_helper_rows

    table = Table(title="Native C helpers (compiled on first use; Python fallbacks otherwise)")
    table.add_column("what")
    table.add_column("backend")
    table.add_column("detail", overflow="fold")
    with console.status("Loading the native helpers (compiled on the first run, ~1 s)..."):
        for row in native_helper_rows():
            table.add_row(*row)
    console.print(table)


def _print_boundary_pool_backends() -> None:
    from rich.table import Table

    from afsd_cli.ops import available_backends
    from afsd_cli.ops.extension import extensions_root

    with console.status("Loading boundary_max_pool kernels (compiled on the first run, ~20-60 s)..."):
        backends = available_backends(build=True)
    table = Table(title=f"boundary_max_pool backends (build cache: {extensions_root()})")
    for column in ("backend", "device", "loaded", "detail"):
        table.add_column(column)
    for info in backends:
        loaded = "[green]yes[/]" if info.available else "[yellow]no[/]"
        table.add_row(info.name, info.device, loaded, info.detail)
    console.print(table)


def _print_self_test(seed: int, repeats: int) -> list:
    """Every loaded backend against the plain loop (ops/selftest.py): a table, then each error."""
    from rich.markup import escape
    from rich.table import Table

    from afsd_cli.ops import self_test

    with console.status("Self-testing the backends..."):
        results = self_test(seed=seed, timing_repeats=repeats)
    table = Table(title="Self-test vs. the official kernel's loop rule (forward, gradient, legacy gradient)")
    for column in ("backend", "device", "result", "max abs diff", "fwd+bwd [2,512,256] S=64"):
        table.add_column(column)
    styles = {"pass": "[green]pass[/]", "fail": "[bold red]FAIL[/]", "error": "[bold red]ERROR[/]"}
    for result in results:
        table.add_row(
            result.backend,
            result.device,
            styles.get(result.status, f"[yellow]{result.status}[/]"),
            "-" if result.max_abs_diff is None else f"{result.max_abs_diff:.3g}",
            "-" if result.milliseconds is None else f"{result.milliseconds:.2f} ms",
        )
    console.print(table)
    for result in results:
        if result.status == "error":
            console.print(f"[red]{result.backend} ({result.device}):[/] {escape(str(result.detail))}", soft_wrap=True)
    return results
