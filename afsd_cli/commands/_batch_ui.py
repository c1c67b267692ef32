"""Rich rendering shared by the batch commands (prepare, flow): progress with frames/s, summary."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from afsd_cli.commands._common import console, err_console

MAX_FAILURE_ROWS = 50


class BatchProgress:
    """Callbacks for the pipeline: ``on_start(total)`` and ``on_result(result)``."""

    def __init__(self, progress: Progress, description: str, unit: str):
        self.progress = progress
        self.description = description
        self.unit = unit
        self.task = None
        self.frames = 0
        self.frames_by_name: dict[str, int] | None = None
        self.reported: dict[str, int] = {}
        self.partial = 0  # work reported by on_clips for the item in progress
        self.started = time.perf_counter()

    def on_start(self, total: int, frames_by_name: dict[str, int] | None = None) -> None:
        """``frames_by_name`` (flow): the bar counts frames, moved by ``on_frames`` inside a video."""
        self.started = time.perf_counter()
        self.frames_by_name = frames_by_name
        self.reported: dict[str, int] = {}
        total = total if frames_by_name is None else sum(frames_by_name.values())
        self.task = self.progress.add_task(self.description, total=total, rate="")

    def on_frames(self, name: str, pairs: int) -> None:
        self.reported[name] = self.reported.get(name, 0) + pairs
        self.frames += pairs
        self.progress.update(self.task, advance=pairs, rate=self._rate(self.frames))

    def on_clips(self, count: int) -> None:
        """Work done inside the item in progress (extract reports every batch of clips)."""
        self.partial += count
        self.progress.update(self.task, rate=self._rate(self.frames + self.partial))

    def _rate(self, work: int) -> str:
        elapsed = time.perf_counter() - self.started
        if elapsed <= 0 or not work:
            return ""
        rate = work / elapsed
        return f"{rate:,.0f} {self.unit}/s" if rate >= 100 else f"{rate:.2g} {self.unit}/s"

    def on_result(self, result) -> None:
        self.partial = 0
        if self.frames_by_name is None:
            if result.status == "done":
                self.frames += result.frames
            self.progress.update(self.task, advance=1, rate=self._rate(self.frames))
            return
        # the video's remaining frames (the repeated last flow frame, or all of a skipped one)
        rest = max(0, self.frames_by_name.get(result.name, 0) - self.reported.pop(result.name, 0))
        if result.status == "done":
            self.frames += rest
        self.progress.update(self.task, advance=rest, rate=self._rate(self.frames))


@contextmanager
def batch_progress(description: str, unit: str = "frames") -> Iterator[BatchProgress]:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=False) as progress:
        yield BatchProgress(progress, description, unit)


def print_summary(report, what: str, unit: str = "frames", notes: bool = True) -> None:
    """Counts, throughput, where things were written, the report's notes (unless the caller
    prints them itself), then a table of the failures (if any)."""
    done = [r for r in report.results if r.status == "done"]
    seconds = sum(r.seconds for r in done)
    frames = sum(r.frames for r in done)
    summary = Table(title=f"{what}: {len(report.results)} item(s)", show_header=True)
    for column in ("done", "skipped", "failed", unit, "worker seconds"):
        summary.add_column(column, justify="right")
    summary.add_row(str(len(done)), str(report.count("skipped")), str(report.count("failed")), f"{frames:,}", f"{seconds:.1f}")
    console.print(summary)
    console.print(f"outputs: {report.out_dir}", highlight=False, markup=False)
    if report.info_path is not None and report.info_path.exists():
        console.print(f"video info: {report.info_path}", highlight=False, markup=False)
    console.print(f"manifest: {report.manifest_path}", highlight=False, markup=False)
    for note in report.notes if notes else ():
        console.print(Text.assemble(("note: ", "yellow"), note))
    failures = report.failures
    if failures:
        table = Table(title=f"[red]{len(failures)} failure(s)", show_header=True, header_style="bold red")
        table.add_column("item", no_wrap=True)
        table.add_column("reason")
        for result in failures[:MAX_FAILURE_ROWS]:
            table.add_row(Text(result.name), Text(result.error or ""))  # no markup parsing of paths
        if len(failures) > MAX_FAILURE_ROWS:
            table.add_row("…", f"{len(failures) - MAX_FAILURE_ROWS} more in {report.manifest_path}")
        err_console.print(table)
