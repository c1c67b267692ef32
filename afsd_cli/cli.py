"""The ``afsd`` Typer application: one entry point, one thin module per command."""

from __future__ import annotations

import typer

from afsd_cli.commands import checks, evaluate, extract, flow, fuse, predict, prepare, train
from afsd_cli.commands._vocabulary import AfsdGroup

app = typer.Typer(
    cls=AfsdGroup,
    name="afsd",
    help="AFSD temporal action localization: prepare, flow, extract, train, predict, fuse, evaluate, checks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from afsd_cli import __version__

        typer.echo(f"afsd {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the afsd version and exit."),
) -> None:
    """AFSD temporal action localization: prepare, flow, extract, train, predict, fuse, evaluate, checks."""


for module in (prepare, flow, extract, train, predict, fuse, evaluate, checks):
    module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
