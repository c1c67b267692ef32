"""The layering rules of docs/architecture.md, checked on the source: the library never imports the
CLI (typer, rich, afsd_cli.commands, afsd_cli.cli), never prints and never exits; evaluation/ and
the modules `afsd evaluate` and `afsd --help` load import torch nowhere at module level."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "afsd_cli"
# the CLI layer, and the scripts run as programs (`make demo`, `python -m afsd_cli...`)
CLI_LAYER = {"cli.py", "__main__.py", "demo.py"}


def library_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if "commands" not in p.relative_to(PACKAGE).parts and p.name not in CLI_LAYER)


def imported_modules(tree: ast.AST, module_level_only: bool = False) -> list[tuple[int, str]]:
    nodes = tree.body if module_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def is_cli_module(name: str) -> bool:
    return name.split(".")[0] in ("typer", "rich", "click") or name.startswith(("afsd_cli.commands", "afsd_cli.cli"))


def outside_main_block(tree: ast.Module) -> list[ast.AST]:
    """Every node except those under ``if __name__ == "__main__":`` (a module run as a program)."""
    def is_main(node: ast.AST) -> bool:
        return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")

    return [n for top in tree.body if not is_main(top) for n in ast.walk(top)]


@pytest.mark.parametrize("path", library_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_library_never_imports_the_cli_never_prints_never_exits(path):
    tree = ast.parse(path.read_text(), str(path))
    cli_imports = [(line, name) for line, name in imported_modules(tree) if is_cli_module(name)]
    assert not cli_imports, f"{path.name} imports the CLI layer: {cli_imports}"
    calls = [(n.lineno, ast.unparse(n.func)) for n in outside_main_block(tree) if isinstance(n, ast.Call)
             and ast.unparse(n.func) in ("print", "sys.exit", "exit", "quit", "os._exit")]
    raises = [(n.lineno, ast.unparse(n.exc)) for n in outside_main_block(tree) if isinstance(n, ast.Raise)
              and n.exc is not None and ast.unparse(n.exc).startswith("SystemExit")]
    assert not calls and not raises, f"{path.name} prints or exits (raise a typed error instead): {calls + raises}"


def test_evaluation_imports_torch_nowhere_at_module_level():
    for path in sorted((PACKAGE / "evaluation").rglob("*.py")):
        modules = [name for _, name in imported_modules(ast.parse(path.read_text()), module_level_only=True)]
        assert not [m for m in modules if m.split(".")[0] == "torch"], path.name


def test_the_rules_catch_a_violation(tmp_path):
    # the checks above are not vacuous: a library-looking module that prints and imports rich fails them
    tree = ast.parse("import rich\ndef f():\n    print('x')\n    raise SystemExit(1)\n")
    assert [is_cli_module(name) for _, name in imported_modules(tree)] == [True]
    calls = [ast.unparse(n.func) for n in outside_main_block(tree) if isinstance(n, ast.Call)]
    assert "print" in calls
    main_only = ast.parse("if __name__ == '__main__':\n    print('table')\n")
    assert not [n for n in outside_main_block(main_only) if isinstance(n, ast.Call)]
