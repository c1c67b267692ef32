"""One vocabulary of options across the commands, and the old spellings kept for one release.

The current names are declared by each command; the spellings of afsd 0.1 that users may have
in scripts (``-v`` for ``--video``, ``--workers`` for ``--jobs``, the ``--amp`` flag with
``--amp-dtype``) are rewritten here to the current ones, with one deprecation line each, before
the command parses its arguments. So ``--help`` shows only the current vocabulary.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperGroup

AMP_MODES = ("off", "bf16", "fp16")

# command -> {old spelling: current spelling}
RENAMED_OPTIONS: dict[str, dict[str, str]] = {
    "predict": {"-v": "--video", "-c": "--checkpoint", "-b": "--batch-size", "--workers": "--jobs"},
    "fuse": {"-v": "--video", "-b": "--batch-size", "--workers": "--jobs"},
    "train": {"--workers": "--jobs"},
    "flow": {"-m": "--method"},
    "prepare": {"-d": "--dataset", "-a": "--annotations"},
    "extract": {"-w": "--weights", "-b": "--batch-size"},
}
# commands whose --amp was a flag (plus --amp-dtype bf16|fp16) in afsd 0.1
AMP_FLAG_COMMANDS = ("predict", "fuse")


def rewrite_deprecated(command: str, args: list[str]) -> tuple[list[str], list[str]]:
    """``args`` with the old spellings of ``command`` replaced, and one notice per old spelling."""
    renamed = RENAMED_OPTIONS.get(command, {})
    amp_flag = command in AMP_FLAG_COMMANDS
    out: list[str] = []
    notices: list[str] = []
    amp_flag_at: int | None = None
    amp_dtype: str | None = None
    index = 0
    while index < len(args):
        token = args[index]
        if token == "--":
            out.extend(args[index:])
            break
        name, equals, value = token.partition("=") if token.startswith("--") else (token, "", "")
        if name in renamed:
            current = renamed[name]
            _notice(notices, f"{name} is now {current}")
            out.append(current + equals + value)
        elif amp_flag and name == "--amp-dtype":
            _notice(notices, "--amp --amp-dtype X is now --amp X (off, bf16 or fp16)")
            if equals:
                amp_dtype = value
            elif index + 1 < len(args):
                amp_dtype = args[index + 1]
                index += 1
        elif amp_flag and token == "--amp" and (index + 1 == len(args) or args[index + 1] not in AMP_MODES):
            _notice(notices, "the --amp flag is now --amp bf16|fp16 (off by default)")
            amp_flag_at = len(out)
            out.append(token)
        else:
            out.append(token)
        index += 1
    if amp_flag_at is not None:
        out.insert(amp_flag_at + 1, amp_dtype or "bf16")
    # (--amp-dtype without the --amp flag had no effect in afsd 0.1, and still has none)
    return out, notices


def _notice(notices: list[str], text: str) -> None:
    line = f"{text}; the old spelling will be removed in the next release"
    if line not in notices:
        notices.append(line)


class AfsdGroup(TyperGroup):
    """The ``afsd`` command group: rewrites deprecated spellings before a command parses them."""

    def resolve_command(self, ctx: Any, args: list[str]):
        name, command, rest = super().resolve_command(ctx, args)
        if name is not None:
            rest, notices = rewrite_deprecated(name, rest)
            if notices:
                from afsd_cli.commands._common import err_console

                for notice in notices:
                    err_console.print(f"[yellow]deprecated:[/] {notice}", highlight=False, soft_wrap=True)
        return name, command, rest
