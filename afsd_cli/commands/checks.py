"""`afsd checks`: versions, devices, op backends and a self-test."""

from __future__ import annotations

import platform
import sys

import typer

from afsd_cli.commands._common import console, fail, handle_errors


def _version_rows() -> list[tuple[str, str]]:
    import numpy
    import torch

    from afsd_cli import __version__

    rows = [
        ("afsd", __version__),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("torch", torch.__version__),
        ("CUDA (torch build)", torch.version.cuda or "none (CPU build)"),
    ]
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    rows.append(("cuDNN", str(cudnn) if cudnn else "not available"))
    rows.append(("numpy", numpy.__version__))
    try:
        import cv2

        rows.append(("opencv", cv2.__version__))
    except ImportError as exc:
        rows.append(("opencv", f"not importable ({exc})"))
    try:
        import PIL

        rows.append(("pillow", PIL.__version__))
    except ImportError as exc:
        rows.append(("pillow", f"not importable ({exc})"))
    rows.append(("platform", platform.platform()))
    return rows


def _device_rows() -> list[tuple[str, str]]:
    import os

    import torch

    rows = [("cpu", f"{os.cpu_count()} logical cores, torch uses {torch.get_num_threads()} threads")]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            rows.append(
                (f"cuda:{index}", f"{props.name}, compute {props.major}.{props.minor}, "
                 f"{props.total_memory / 2**30:.1f} GiB")
            )
    else:
        rows.append(("cuda", "no CUDA device visible"))
    return rows


def _resize_backend() -> tuple[str, str]:
    from afsd_cli.ops.bicubic_resize import active_backend, pillow_pass_rule

    backend, detail = active_backend()
    order = "vertical pass first for tall shrinks" if pillow_pass_rule() else "horizontal pass first"
    return backend, f"{detail}; installed Pillow: {order}"


def _backend_row(describe) -> tuple[str, str]:
    try:
        return describe()
    except Exception as exc:  # noqa: BLE001 - a misconfigured backend is reported, not fatal here
        return "error", str(exc)


def register(app: typer.Typer) -> None:
    @app.command("checks")
    @handle_errors
    def checks(
        seed: int = typer.Option(0, min=0, help="Seed of the self-test's random input."),
        repeats: int = typer.Option(5, min=1, help="Timed forward+backward calls per backend (median shown)."),
    ) -> None:
        """Report versions, devices and boundary-max-pool backends, and self-test them."""
        from rich.markup import escape
        from rich.table import Table

        from afsd_cli.ops import available_backends, self_test
        from afsd_cli.ops.extension import extensions_root

        table = Table(title="Versions", show_header=False)
        for name, value in _version_rows():
            table.add_row(name, value)
        console.print(table)

        table = Table(title="Devices", show_header=False)
        for name, value in _device_rows():
            table.add_row(name, value)
        console.print(table)

        table = Table(title="Native C helpers (compiled on first use; Python fallbacks otherwise)")
        table.add_column("what")
        table.add_column("backend")
        table.add_column("detail", overflow="fold")
        with console.status("Loading the native helpers (compiled on the first run, ~1 s)..."):
            from afsd_cli.ops.soft_nms import soft_nms_backend

            table.add_row("frame resize (pil-bicubic)", *_backend_row(_resize_backend))
            table.add_row("soft-NMS", *_backend_row(soft_nms_backend))
        console.print(table)

        with console.status("Loading boundary_max_pool kernels (compiled on the first run, ~20-60 s)..."):
            backends = available_backends(build=True)
        table = Table(title=f"boundary_max_pool backends (build cache: {extensions_root()})")
        for column in ("backend", "device", "loaded", "detail"):
            table.add_column(column)
        for info in backends:
            loaded = "[green]yes[/]" if info.available else "[yellow]no[/]"
            table.add_row(info.name, info.device, loaded, info.detail)
        console.print(table)

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

        broken = [f"{r.backend} ({r.device})" for r in results if r.status in ("fail", "error")]
        if broken:
            raise fail(f"boundary_max_pool backends disagree with the reference rule: {', '.join(broken)}")
        console.print("[green]All loaded backends agree.[/]")
