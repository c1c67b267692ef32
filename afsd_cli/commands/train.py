"""`afsd train`: train AFSD from a config, on one device or under torchrun (DDP)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Union

import typer

from afsd_cli.commands._common import console, err_console, handle_errors

if TYPE_CHECKING:
    from afsd_cli.config import Config
    from afsd_cli.engine.trainer import TrainResult

RunDir = Union[Path, Callable[[], Path]]  # a callable names a new run folder on rank 0 only


def register(app: typer.Typer) -> None:
    @app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    @handle_errors
    def train(
        ctx: typer.Context,
        config: Optional[Path] = typer.Argument(
            None, help="YAML config (official layout). Optional with --resume (the run's config.yaml is used)."),
        name: Optional[str] = typer.Option(None, "--name", help="run folder name (default: exp, exp2, ...)"),
        resume: Optional[Path] = typer.Option(None, "--resume", help="continue the run in this folder after its last saved epoch"),
        runs_dir: Optional[Path] = typer.Option(
            None, "--runs-dir", help="Folder of the runs (default: runs/train, or $AFSD_RUNS/train)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (torchrun: one GPU per process)"),
        amp: Optional[str] = typer.Option(None, "--amp", help="off, bf16 or fp16 (default: training.amp)"),
        batch_size: Optional[int] = typer.Option(
            None, "--batch-size", min=1, help="Windows per step and process (default: training.batch_size)"),
        jobs: Optional[int] = typer.Option(
            None, "--jobs", "-j", min=0, help="DataLoader worker processes (default: training.num_workers)"),
        max_steps: Optional[int] = typer.Option(
            None, "--max-steps", min=1, help="stop every epoch after this many steps (smoke runs)"),
    ) -> None:
        """Train AFSD. Extra KEY=VALUE arguments override config keys, e.g. training.max_epoch=4.

        Multi-GPU: torchrun --nproc_per_node N -m afsd_cli train CONFIG ...
        """
        from afsd_cli.config import load_config

        config, overrides = _config_and_overrides(config, list(ctx.args))
        config_path, run_dir = _config_and_run_dir(config, resume, runs_dir, name)
        if batch_size is not None:
            overrides.append(f"training.batch_size={batch_size}")
        cfg = load_config(config_path, overrides)
        _check_inputs(cfg, resume if resume is not None else (runs_dir or _default_runs_dir()))
        _run(cfg, run_dir, resume is not None, device, amp, jobs, max_steps)


def _default_runs_dir() -> Path:
    from afsd_cli.runs import default_runs_dir

    return default_runs_dir("train")


def _config_and_overrides(config: Optional[Path], overrides: List[str]) -> tuple[Optional[Path], List[str]]:
    """CONFIG and the KEY=VALUE overrides (``afsd train --resume RUN key=value``: the first
    override lands in CONFIG's slot)."""
    from afsd_cli.errors import ConfigError

    if config is not None and "=" in config.name and not config.exists():
        overrides.insert(0, str(config))
        config = None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"unexpected argument {item!r}: overrides are KEY=VALUE (e.g. training.max_epoch=4)")
    return config, overrides


def _config_and_run_dir(config: Optional[Path], resume: Optional[Path], runs_dir: Optional[Path],
                        name: Optional[str]) -> tuple[Path, RunDir]:
    """The config file and the run folder: ``--resume``'s (its own config.yaml unless CONFIG is
    given), else a new one under the runs folder, named on rank 0 only (``train`` calls it)."""
    from afsd_cli.errors import ConfigError

    if resume is not None:
        if not resume.is_dir():
            raise ConfigError("no such run folder", resume)
        return config or resume / "config.yaml", resume
    if config is None:
        raise ConfigError("a CONFIG file is needed (or --resume RUN_DIR)")
    from afsd_cli.runs import new_run_dir

    base = runs_dir or _default_runs_dir()
    return config, lambda: new_run_dir(base, name, reuse_hint="continue it with --resume", create=False)


def _check_inputs(cfg: Config, destination: Path) -> None:
    """What fails in seconds, before any run folder or model exists."""
    from afsd_cli.data.datasets import check_training_inputs
    from afsd_cli.io import ensure_writable

    ensure_writable(destination, kind="folder")  # a read-only or full disk fails now, not after loading
    check_training_inputs(cfg)


def _run(cfg: Config, run_dir: RunDir, resume: bool, device: str, amp: Optional[str], workers: Optional[int],
         max_steps: Optional[int]) -> None:
    """Train with progress bars (main process only), then the summary."""
    from afsd_cli.engine.trainer import TrainOptions, train

    options = TrainOptions(device=device, amp=amp, num_workers=workers, max_steps_per_epoch=max_steps)
    main_process = int(os.environ.get("RANK", "0")) == 0
    progress = _progress_bars(visible=main_process)
    view = _TrainingView(progress) if main_process else (lambda event: None)
    with progress:
        result = train(cfg, run_dir, resume=resume, options=options, callback=view)
    if main_process:
        _print_summary(result)


def _progress_bars(visible: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.fields[epoch]}[/]"), BarColumn(bar_width=20), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[losses]}"),
        console=console, disable=not visible, transient=False,
    )


class _TrainingView:
    """The trainer's events (``afsd_cli/engine/trainer.py``) as progress bars and lines."""

    def __init__(self, progress: Any):
        self.progress = progress
        self.epoch_task: Any = None
        self.validation_task: Any = None
        self.handlers = {"epoch_start": self.epoch_start, "step": self.step,
                         "validation_progress": self.validation_progress, "validation": self.validation,
                         "warning": self.warning, "skipped_step": self.warning, "info": self.info}

    def __call__(self, event: dict) -> None:
        handler = self.handlers.get(event["kind"])
        if handler is not None:
            handler(event)

    def epoch_start(self, event: dict) -> None:
        self.epoch_task = self.progress.add_task(
            "train", total=event["steps"], epoch=f"{event['epoch']}/{event['max_epoch']}", losses="")

    def step(self, event: dict) -> None:
        from afsd_cli.engine.losses import TERM_NAMES  # the names of metrics.csv and loss_curve.png too

        if self.epoch_task is None:
            return
        losses = event["losses"]
        text = f"loss {losses['total']:.4g} (" + " ".join(f"{k} {losses[k]:.3g}" for k in TERM_NAMES) + ")"
        self.progress.update(self.epoch_task, completed=event["step"], losses=text)

    def validation_progress(self, event: dict) -> None:
        if self.validation_task is None or event["done"] == 1:
            self.validation_task = self.progress.add_task("validate", total=event["total"],
                                                          epoch=f"{event['epoch']} validation", losses="videos")
        self.progress.update(self.validation_task, completed=event["done"])

    def validation(self, event: dict) -> None:
        self.progress.console.print(f"epoch {event['epoch']}: validation mAP {event['map']:.4f}")

    def warning(self, event: dict) -> None:
        from rich.markup import escape

        message = event.get("message") or (f"epoch {event['epoch']} step {event['step']}: non-finite "
                                           f"{', '.join(event['terms'])}, step skipped")
        err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)

    def info(self, event: dict) -> None:
        self.progress.console.print(event["message"], highlight=False, soft_wrap=True)


def _print_summary(result: TrainResult) -> None:
    _print_loss_table(result.epochs)
    _print_last_epoch(result.epochs)
    _print_amp_skips(result.epochs)
    _print_run_folder(result)


def _print_loss_table(epochs: list[dict[str, Any]]) -> None:
    from rich import box
    from rich.table import Table

    from afsd_cli.engine.losses import TERM_NAMES

    table = Table(title="weighted loss per epoch (means)", box=box.SIMPLE_HEAD, padding=(0, 1))
    for column in ("epoch", "total", *TERM_NAMES):
        table.add_column(column, justify="right", no_wrap=True)
    for row in epochs:
        table.add_row(str(row["epoch"]), f"{row['total']:.4g}", *(f"{row[k]:.3g}" for k in TERM_NAMES))
    console.print(table)


def _print_last_epoch(epochs: list[dict[str, Any]]) -> None:
    for row in epochs[-1:]:
        val = row.get("val_map")
        extra = "" if val is None or val != val else f", validation mAP {val:.4f}"
        console.print(f"epoch {row['epoch']}: {row['seconds']:.1f} s, {row['frames_per_second']:.3g} frames/s{extra}",
                      highlight=False)


def _print_amp_skips(epochs: list[dict[str, Any]]) -> None:
    amp_skipped = sum(int(row.get("amp_skipped_steps", 0)) for row in epochs)
    if amp_skipped:
        steps = sum(int(row.get("steps", 0)) for row in epochs)
        console.print(f"fp16: the gradient scaler skipped {amp_skipped} of {steps} optimiser steps (inf/NaN "
                      "gradients; it starts at scale 65536 and lowers it on the first steps, so a few are "
                      "normal; many mean fp16 overflows: use --amp bf16)", highlight=False, soft_wrap=True)


def _print_run_folder(result: TrainResult) -> None:
    from afsd_cli.runs import epoch_checkpoints, epoch_states

    console.print(f"run folder: {result.run_dir} (config.yaml, env.json, metrics.csv, loss_curve.png)",
                  soft_wrap=True, highlight=False, markup=False)
    models = [path.name for _, path in sorted(epoch_checkpoints(result.run_dir).items())]
    states = [f"training/{path.name}" for _, path in sorted(epoch_states(result.run_dir).items())]
    console.print(f"kept: {', '.join(models + states)} (training.keep_checkpoints)", soft_wrap=True,
                  highlight=False, markup=False)
    if result.best_epoch is not None:
        console.print(f"best validation mAP {result.best_map:.4f} at epoch {result.best_epoch}: "
                      f"{result.run_dir / 'checkpoint-best.ckpt'}", soft_wrap=True, highlight=False)
    console.print(f"test it: afsd predict {result.run_dir / 'config.yaml'}", soft_wrap=True, highlight=False,
                  markup=False)
