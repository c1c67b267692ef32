"""`afsd train`: train AFSD from a config, on one device or under torchrun (DDP)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional

import typer

from afsd_cli.commands._common import console, err_console, handle_errors


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
        from afsd_cli.errors import ConfigError

        overrides: List[str] = list(ctx.args)
        if config is not None and "=" in config.name and not config.exists():
            # `afsd train --resume RUN key=value`: the first override landed in CONFIG's slot
            overrides.insert(0, str(config))
            config = None
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"unexpected argument {item!r}: overrides are KEY=VALUE (e.g. training.max_epoch=4)")
        if resume is not None:
            if not resume.is_dir():
                raise ConfigError("no such run folder", resume)
            config_path = config or resume / "config.yaml"
            run_dir: Any = resume
        else:
            if config is None:
                raise ConfigError("a CONFIG file is needed (or --resume RUN_DIR)")
            config_path = config
            from afsd_cli.runs import default_runs_dir, new_run_dir

            base = runs_dir or default_runs_dir("train")
            run_dir = lambda: new_run_dir(base, name, reuse_hint="continue it with --resume",  # noqa: E731 - rank 0 only
                                          create=False)
        if batch_size is not None:
            overrides.append(f"training.batch_size={batch_size}")
        cfg = load_config(config_path, overrides)
        from afsd_cli.data.datasets import check_training_inputs
        from afsd_cli.io import ensure_writable
        from afsd_cli.runs import default_runs_dir

        # a read-only or full disk fails now, not after the model and the data are loaded
        ensure_writable(resume if resume is not None else (runs_dir or default_runs_dir("train")), kind="folder")
        check_training_inputs(cfg)  # seconds, before any run folder or model exists
        _run(cfg, run_dir, resume is not None, device, amp, jobs, max_steps)


def _run(cfg, run_dir, resume: bool, device: str, amp: Optional[str], workers: Optional[int],
         max_steps: Optional[int]) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich import box
    from rich.table import Table
    from rich.markup import escape

    from afsd_cli.engine.losses import TERM_NAMES  # the names of metrics.csv and loss_curve.png too
    from afsd_cli.engine.trainer import TrainOptions, train
    from afsd_cli.runs import epoch_checkpoints, epoch_states

    main_process = int(os.environ.get("RANK", "0")) == 0
    progress = Progress(
        TextColumn("[bold]{task.fields[epoch]}[/]"), BarColumn(bar_width=20), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[losses]}"),
        console=console, disable=not main_process, transient=False,
    )
    task = validation_task = None

    def on_event(event: dict) -> None:
        nonlocal task, validation_task
        kind = event["kind"]
        if not main_process:
            return
        if kind == "epoch_start":
            task = progress.add_task("train", total=event["steps"], epoch=f"{event['epoch']}/{event['max_epoch']}", losses="")
        elif kind == "step" and task is not None:
            losses = event["losses"]
            text = f"loss {losses['total']:.4g} (" + " ".join(
                f"{k} {losses[k]:.3g}" for k in TERM_NAMES) + ")"
            progress.update(task, completed=event["step"], losses=text)
        elif kind == "validation_progress":
            if validation_task is None or event["done"] == 1:
                validation_task = progress.add_task("validate", total=event["total"],
                                                    epoch=f"{event['epoch']} validation", losses="videos")
            progress.update(validation_task, completed=event["done"])
        elif kind == "validation":
            progress.console.print(f"epoch {event['epoch']}: validation mAP {event['map']:.4f}")
        elif kind in ("warning", "skipped_step"):
            message = event.get("message") or f"epoch {event['epoch']} step {event['step']}: non-finite {', '.join(event['terms'])}, step skipped"
            err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
        elif kind == "info":
            progress.console.print(event["message"], highlight=False, soft_wrap=True)

    options = TrainOptions(device=device, amp=amp, num_workers=workers, max_steps_per_epoch=max_steps)
    with progress:
        result = train(cfg, run_dir, resume=resume, options=options, callback=on_event)
    if not main_process:
        return
    table = Table(title="weighted loss per epoch (means)", box=box.SIMPLE_HEAD, padding=(0, 1))
    for column in ("epoch", "total", *TERM_NAMES):
        table.add_column(column, justify="right", no_wrap=True)
    for row in result.epochs:
        table.add_row(str(row["epoch"]), f"{row['total']:.4g}", *(f"{row[k]:.3g}" for k in TERM_NAMES))
    console.print(table)
    for row in result.epochs[-1:]:
        val = row.get("val_map")
        extra = "" if val is None or val != val else f", validation mAP {val:.4f}"
        console.print(f"epoch {row['epoch']}: {row['seconds']:.1f} s, {row['frames_per_second']:.3g} frames/s{extra}",
                      highlight=False)
    amp_skipped = sum(int(row.get("amp_skipped_steps", 0)) for row in result.epochs)
    if amp_skipped:
        steps = sum(int(row.get("steps", 0)) for row in result.epochs)
        console.print(f"fp16: the gradient scaler skipped {amp_skipped} of {steps} optimiser steps (inf/NaN "
                      "gradients; it starts at scale 65536 and lowers it on the first steps, so a few are "
                      "normal; many mean fp16 overflows: use --amp bf16)", highlight=False, soft_wrap=True)
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
