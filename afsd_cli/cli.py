"""The ``afsd`` Typer application: one entry point, one thin module per command."""

from __future__ import annotations

import typer

from afsd_cli.commands import checks, evaluate, extract, flow, fuse, predict, prepare, train

app = typer.Typer(
    name="afsd",
    help="AFSD temporal action localization: prepare, flow, train, predict, fuse, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

for module in (prepare, flow, train, predict, fuse, evaluate, checks, extract):
    module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
