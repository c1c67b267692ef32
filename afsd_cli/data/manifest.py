"""``OUT_DIR/manifest.json``: what a batch command produced, one record per item.

Records survive across runs: a resumed run keeps the records of the items it skips and replaces
those it redoes. The file is rewritten atomically (and at most every few seconds while a batch
runs), so an interrupted run still leaves a valid manifest of what was finished.

Several processes may write into one folder at once (two ``afsd prepare`` runs over different
videos): each save is a read-modify-write under an exclusive ``flock`` of the folder that
merges the records on disk with the ones this process made, so no entry is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from afsd_cli.io import write_json

if TYPE_CHECKING:
    from afsd_cli.data.batch import TaskResult

MANIFEST_NAME = "manifest.json"
MANIFEST_SAVE_INTERVAL_S = 5.0  # while a batch runs; the final save is unconditional


class Manifest:
    def __init__(self, path: str | Path, command: str, settings: dict[str, Any] | None = None):
        self.path = Path(path)
        self.command = command
        self.settings = settings or {}
        self.items: dict[str, dict] = {}
        self.previous_settings: dict[str, Any] = {}
        self._last_save = 0.0
        self._recorded: set[str] = set()  # names this process recorded: its version wins when merging
        previous = _read_manifest(self.path)
        if previous is not None:
            self.items = previous["items"]
            self.previous_settings = previous.get("settings") or {}

    def changed_settings(self, keys) -> list[str]:
        """Notes for settings that differ from the run that made the existing outputs."""
        if not self.items or not self.previous_settings:
            return []
        return [
            f"existing outputs were made with {key}={self.previous_settings.get(key)!r}, this run uses "
            f"{self.settings.get(key)!r}; they are kept (use --overwrite to redo them)"
            for key in keys
            if key in self.previous_settings and self.previous_settings.get(key) != self.settings.get(key)
        ]

    def get(self, name: str) -> dict | None:
        return self.items.get(name)

    def record(self, name: str, entry: dict) -> None:
        self.items[name] = entry
        self._recorded.add(name)

    def save(self, throttle_s: float = 0.0) -> None:
        now = time.monotonic()
        if throttle_s and now - self._last_save < throttle_s:
            return
        self._last_save = now
        with folder_lock(self.path.parent):
            on_disk = _read_manifest(self.path)
            merged = dict(on_disk["items"]) if on_disk is not None else {}
            merged.update({name: self.items[name] for name in self._recorded})
            # records this process only read are taken from disk (another run may have redone them)
            self.items = {**self.items, **merged}
            write_json(
                self.path,
                {
                    "command": self.command,
                    "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "settings": self.settings,
                    "items": {k: self.items[k] for k in sorted(self.items)},
                },
            )


def _read_manifest(path: Path) -> dict | None:
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # no manifest yet, or an unreadable one: start afresh
    if isinstance(previous, dict) and isinstance(previous.get("items"), dict):
        return previous
    return None


@contextlib.contextmanager
def folder_lock(folder: str | Path):
    """An exclusive advisory lock on ``folder`` for a read-modify-write of a file in it (flock on
    the folder itself: no lock file is left behind; a no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows: single-writer behaviour
        yield
        return
    from afsd_cli.io import output_error

    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        raise output_error(exc, folder, "cannot lock the folder") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class ManifestRecorder:
    """The ``on_result`` of a batch job (``prepare``, ``flow``, ``extract``): keeps each result,
    records it in the manifest (saved every few seconds) and passes it on.

    ``source_of(name)``: the input recorded for an item; ``done_fields``: settings recorded with
    every item produced (flow: method, device, quality). A failed item keeps what its previous
    record said (an earlier output stays described) under the new status and error."""

    def __init__(self, manifest: Manifest, source_of: Callable[[str], str | None],
                 on_result: Callable[[TaskResult], Any] | None, done_fields: dict[str, Any] | None = None):
        self.manifest, self.source_of, self.on_result = manifest, source_of, on_result
        self.done_fields = done_fields or {}
        self.results: dict[str, TaskResult] = {}

    def __call__(self, result: TaskResult) -> None:
        from afsd_cli.data.batch import DONE, FAILED

        self.results[result.name] = result
        source = self.source_of(result.name)
        if result.status == FAILED:
            previous = self.manifest.get(result.name) or {}
            self.manifest.record(result.name, {**previous, "status": FAILED, "source": source,
                                               "error": result.error, "seconds": round(result.seconds, 3)})
        elif result.status == DONE:
            self.manifest.record(result.name, {"status": DONE, "source": source, "output": f"{result.name}.npy",
                                               "seconds": round(result.seconds, 3), **self.done_fields,
                                               **result.info})
        self.manifest.save(throttle_s=MANIFEST_SAVE_INTERVAL_S)
        if self.on_result is not None:
            self.on_result(result)
