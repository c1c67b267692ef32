"""``OUT_DIR/manifest.json``: what a batch command produced, one record per item.

Records survive across runs: a resumed run keeps the records of the items it skips and replaces
those it redoes. The file is rewritten atomically (and at most every few seconds while a batch
runs), so an interrupted run still leaves a valid manifest of what was finished.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from afsd_cli.io import write_json

MANIFEST_NAME = "manifest.json"


class Manifest:
    def __init__(self, path: str | Path, command: str, settings: dict[str, Any] | None = None):
        self.path = Path(path)
        self.command = command
        self.settings = settings or {}
        self.items: dict[str, dict] = {}
        self.previous_settings: dict[str, Any] = {}
        self._last_save = 0.0
        try:
            previous = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(previous, dict) and isinstance(previous.get("items"), dict):
                self.items = previous["items"]
                self.previous_settings = previous.get("settings") or {}
        except (OSError, ValueError):
            pass  # no manifest yet, or an unreadable one: start afresh

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

    def save(self, throttle_s: float = 0.0) -> None:
        now = time.monotonic()
        if throttle_s and now - self._last_save < throttle_s:
            return
        self._last_save = now
        write_json(
            self.path,
            {
                "command": self.command,
                "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "settings": self.settings,
                "items": {k: self.items[k] for k in sorted(self.items)},
            },
        )
