"""Shared helpers of the command modules: consoles, error rendering, override parsing."""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console

from afsd_cli.errors import AFSDError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one red error line on stderr and return the Exit to raise."""
    from rich.markup import escape

    # the message is plain text: brackets or ":x:" in a path must print as they are
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True, emoji=False)
    return typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn the library's typed errors into one clear line and a non-zero exit (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AFSDError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            # 128 + SIGINT, as a shell reports it; the atomic writers have removed their temp files
            raise fail("interrupted", code=130) from None
        except OSError as exc:
            # a system error the library did not translate: still one line, the path and the reason
            raise fail(_os_error_line(exc)) from None

    return wrapper  # type: ignore[return-value]


def _os_error_line(exc: OSError) -> str:
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{exc.filename}: {reason}" if exc.filename else reason
