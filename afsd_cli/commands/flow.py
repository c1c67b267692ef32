"""`afsd flow`."""

from __future__ import annotations

import typer

from afsd_cli.commands._common import not_implemented


def register(app: typer.Typer) -> None:
    @app.command("flow", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def flow() -> None:
        """Not implemented yet."""
        raise not_implemented("flow")
