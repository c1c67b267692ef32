"""Every `from afsd_cli... import ...` line in the README and docs/ names something that exists: a
module moved by a refactor must take its documentation along."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# `from afsd_cli.x import a, b as c` on one line, or `from afsd_cli.x import (a,\n b)` over several
IMPORT = re.compile(r"^from (afsd_cli[\w.]*) import (\([^)]*\)|[^\n#]*)", re.M)


def documented_imports(text: str) -> list[tuple[str, str]]:
    found = []
    for match in IMPORT.finditer(text):
        names = re.sub(r"#[^\n]*", "", match.group(2)).strip("() \n")
        found += [(match.group(1), name.split(" as ")[0].strip())
                  for name in names.replace("\n", " ").split(",") if name.strip()]
    return found


def resolves(module_name: str, name: str) -> bool:
    module = importlib.import_module(module_name)
    if hasattr(module, name):
        return True
    try:  # a submodule: `from afsd_cli.ops import soft_nms`
        importlib.import_module(f"{module_name}.{name}")
        return True
    except ImportError:
        return False


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_documented_imports_exist(document):
    missing = [f"{module}.{name}" for module, name in documented_imports(document.read_text())
               if not resolves(module, name)]
    assert not missing, f"{document.name} imports names that do not exist: {missing}"


def test_the_parser_reads_both_import_forms():
    text = "from afsd_cli.io import (write_json,\n    write_text)\nfrom afsd_cli.names import check_video_name as c  # x\n"
    assert documented_imports(text) == [("afsd_cli.io", "write_json"), ("afsd_cli.io", "write_text"),
                                        ("afsd_cli.names", "check_video_name")]
    assert not resolves("afsd_cli.io", "no_such_writer")
