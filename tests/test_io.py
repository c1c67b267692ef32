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


def test_readers_name_the_file_and_the_problem(tmp_path):
    from afsd_cli.errors import InputError
    from afsd_cli.io import read_json, read_text

    with pytest.raises(InputError, match="classifier file not found") as info:
        read_json(tmp_path / "nope.json", "classifier file")
    assert str(tmp_path / "nope.json") in str(info.value)
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": [1, 2,, 3]}')
    with pytest.raises(InputError, match="malformed JSON at line 1 column 13"):
        read_json(bad)
    bad.write_text("  \n")
    with pytest.raises(InputError, match="JSON file is empty"):
        read_json(bad)
    bad.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InputError, match="not UTF-8"):
        read_text(bad, "annotation CSV")
    with pytest.raises(InputError, match="is a directory"):
        read_text(tmp_path)
    bad.write_text('\ufeff{"ok": 1}', encoding="utf-8")
    assert read_json(bad) == {"ok": 1}  # a byte-order mark is accepted
