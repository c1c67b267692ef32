"""Atomic writers: complete file or nothing, usual permissions."""

import os
import stat

import pytest

from afsd_cli.io import atomic_open, write_json, write_text


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "out.json"
    old_mask = os.umask(0o022)
    try:
        write_json(target, {"a": 1})
        write_json(target, {"a": 2})
    finally:
        os.umask(old_mask)
    assert target.read_text().strip().endswith("}")
    assert '"a": 2' in target.read_text()
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644  # not mkstemp's 0600


def test_crash_keeps_previous_file(tmp_path):
    target = tmp_path / "out.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as handle:
            handle.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
