"""`afsd checks`: versions, devices, op backends and a self-test."""

from __future__ import annotations

import typer

from afsd_cli.commands._common import not_implemented


def register(app: typer.Typer) -> None:
    @app.command("checks")
    def checks() -> None:
        """Report versions, devices and boundary-max-pool backends, and self-test them."""
        raise not_implemented("checks")
