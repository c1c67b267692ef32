"""The training loop (official ``{thumos14,anet}/train.py``): one process, or one process per GPU under ``torchrun``.

``train(cfg, ...)`` builds the model, data and optimiser a config describes and runs the epochs,
writing everything into one run folder:

* ``config.yaml`` (resolved), ``env.json`` (versions, devices, command),
* ``metrics.csv`` (every weighted loss term per epoch, total, learning rates, seconds, frames/s,
  validation mAP when enabled) and ``loss_curve.png`` (when matplotlib is installed),
* ``checkpoint-{epoch}.ckpt``: the bare model state dict in the official layout,
* ``training/state-{epoch}.pt``: optimiser, grad scaler, RNG states and bookkeeping, readable
  with ``torch.load(weights_only=True)``.

Only the last epoch's model and state and ``checkpoint-best.ckpt`` are kept unless
``training.keep_checkpoints`` asks for more (``afsd_cli.runs.prune_checkpoints``); the run's
``config.yaml`` names the run's own checkpoint (``afsd_cli.runs.training_run_config``).

Randomness is a function of ``(seed, epoch, index)`` (see ``afsd_cli.data.datasets``) and the
per-epoch shuffle of ``DistributedSampler(seed)``; with the model and optimiser state restored a
resumed run therefore continues with exactly the losses an uninterrupted one would have.

The library never prints: progress goes to ``callback(event: dict)``; errors are raised as
``TrainingError`` / ``ConfigError`` / ``InputError``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from afsd_cli.engine.losses import TERM_NAMES, LossSettings, consistency_loss, detection_losses, weighted_terms
from afsd_cli.errors import ConfigError, TrainingError
from afsd_cli.runs import parse_keep_checkpoints, prune_checkpoints, training_run_config

Callback = Callable[[dict[str, Any]], None]

METRIC_COLUMNS = ("epoch", "total", *TERM_NAMES, "steps", "skipped_steps", "amp_skipped_steps", "lr_backbone",
                  "lr_head", "seconds", "frames_per_second", "val_map")
INT_COLUMNS = ("epoch", "steps", "skipped_steps", "amp_skipped_steps")
STATE_DIR = "training"


# --------------------------------------------------------------------------------------------
# Run folders, environment, RNG state
# --------------------------------------------------------------------------------------------
# What a run writes before its first epoch ends: a folder holding only these never trained.
START_FILES = ("config.yaml", "profile.json", "env.json")


def never_trained(path: Path) -> bool:
    """True for a run folder left by a start that died before its first checkpoint (e.g. SIGKILL):
    nothing in it but ``START_FILES``, hidden temporary files and empty folders
    (``afsd_cli.runs.is_unused_run_dir``)."""
    from afsd_cli.runs import is_unused_run_dir

    return is_unused_run_dir(path)


def new_run_dir(base: str | Path = "runs/train", name: str | None = None) -> Path:
    """``afsd_cli.runs.new_run_dir`` for training (not created: ``train`` creates it, so that a
    failed start can remove it again); kept here for the old import."""
    from afsd_cli.runs import new_run_dir as next_free

    return next_free(base, name, reuse_hint="continue it with --resume", create=False)


def environment_report(device: torch.device, world_size: int = 1, amp: str = "off") -> dict[str, Any]:
    """``env.json`` of a training run: afsd version, interpreter, command line, torch, devices,
    and when it started."""
    from afsd_cli.runs import environment, torch_environment

    return environment({**torch_environment(device), "world_size": world_size, "amp": amp,
                        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def rng_state() -> dict[str, Any]:
    """Every global RNG state as tensors and plain lists (loadable with ``weights_only=True``)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_state_epoch(run_dir: Path) -> int | None:
    epochs = [int(m.group(1)) for p in (run_dir / STATE_DIR).glob("state-*.pt")
              if (m := re.fullmatch(r"state-(\d+)\.pt", p.name))]
    return max(epochs) if epochs else None


# --------------------------------------------------------------------------------------------
# Settings derived from the config
# --------------------------------------------------------------------------------------------
def loss_settings_from_config(cfg: Any, spec: Any) -> LossSettings:
    from afsd_cli.profile import resolve_profile

    training = cfg.training
    return LossSettings.official(
        resolve_profile(cfg).rules.loss_procedure,
        num_classes=spec.model_classes,
        clip_length=spec.clip_length,
        lw=float(training.lw),
        cw=float(training.cw),
        piou=float(training.piou),
        ssl=float(training.ssl),
        mask_downsample=spec.head.level0_stride,
    )


def build_optimizer(model: nn.Module, cfg: Any) -> torch.optim.Optimizer:
    """Adam with coupled L2 (as ``train.py``): group 0 = backbone at ``lr × backbone_lr_scale``, group 1 = head
    at ``lr``. Frozen BN parameters are included (never updated, as in the official code)."""
    training = cfg.training
    lr = float(training.learning_rate)
    scale = float(getattr(training, "backbone_lr_scale", None) or 1.0)
    decay = float(training.weight_decay)
    return torch.optim.Adam([
        {"params": list(model.backbone.parameters()), "lr": lr * scale, "weight_decay": decay, "name": "backbone"},
        {"params": list(model.coarse_pyramid_detection.parameters()), "lr": lr, "weight_decay": decay, "name": "head"},
    ])


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# --------------------------------------------------------------------------------------------
# Distributed helpers
# --------------------------------------------------------------------------------------------
@dataclass
class DistributedContext:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> DistributedContext:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1); NCCL on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistributedContext()
    import torch.distributed as dist

    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
        created = True
    return DistributedContext(world, rank, local, created)


def resolve_device(requested: str | None, ctx: DistributedContext) -> torch.device:
    requested = (requested or "auto").lower()
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {requested}: CUDA is not available on this machine")
        if ctx.enabled:
            torch.cuda.set_device(ctx.local_rank)
            return torch.device("cuda", ctx.local_rank)
        return torch.device(requested)
    if requested != "cpu":
        raise ConfigError(f"unknown device {requested!r} (expected auto, cpu, cuda or cuda:N)")
    return torch.device("cpu")


# --------------------------------------------------------------------------------------------
# One step
# --------------------------------------------------------------------------------------------
def _autocast(device: torch.device, amp: str):
    if amp == "off":
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def _to_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float() if tensor.is_floating_point() else tensor


def compute_losses(
    model: nn.Module,
    core: nn.Module,
    batch: Any,
    settings: LossSettings,
    device: torch.device,
    amp: str = "off",
    legacy_bmp_grad: bool = False,
) -> dict[str, torch.Tensor]:
    """Unweighted loss terms of one batch, including the consistency (``trip``) term.

    ``model`` is what the main forward goes through (the DDP wrapper when distributed), ``core``
    the bare network, used for the consistency pass as in the official code.
    """
    clips = batch.clips.to(device, non_blocking=True)
    targets = [t.to(device) for t in batch.targets]
    with _autocast(device, amp):
        outputs = model(clips)
    # the network runs in reduced precision under AMP; the losses (exp, log, focal) run in float32
    outputs = type(outputs)(*(_to_float32(t) for t in outputs))
    terms = detection_losses(outputs, targets, batch.scores.to(device), settings)
    flagged = [i for i, index in enumerate(batch.consistency_index) if index is not None]
    if settings.ssl > 0 and flagged:
        values = []
        for i in flagged:
            ssl_clip = clips[i:i + 1].index_select(2, batch.consistency_index[i].to(device))
            with _autocast(device, amp):
                features = core.consistency_features(ssl_clip)
            features = [_to_float32(t) for t in features]
            value, _ = consistency_loss(features, batch.consistency_proposals[i], settings.triplet_scales,
                                        settings.triplet_weights, legacy_bmp_grad)
            values.append(value)
        terms["trip"] = torch.stack(values).mean()
    else:
        terms["trip"] = terms["loc"].new_zeros(())
    return terms


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
@dataclass
class TrainOptions:
    device: str | None = None  # auto | cpu | cuda | cuda:N
    amp: str | None = None  # off | bf16 | fp16 (None: the config's training.amp)
    max_steps_per_epoch: int | None = None  # stop each epoch early (smoke runs, benchmarks)
    num_workers: int | None = None
    max_epoch: int | None = None


@dataclass
class TrainResult:
    run_dir: Path
    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_map: float | None = None
    model: nn.Module | None = None  # the trained network (bare, not the DDP wrapper)


def _mean(rows: list[dict[str, float]], key: str) -> float:
    values = [r[key] for r in rows if key in r]
    return float(sum(values) / len(values)) if values else float("nan")


def _read_metrics(path: Path, upto_epoch: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    out = []
    for row in rows:
        if int(row["epoch"]) <= upto_epoch:
            out.append({k: (int(v) if k in INT_COLUMNS else float(v)) for k, v in row.items()
                        if v not in ("", None)})
    return out


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    from afsd_cli.io import write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(METRIC_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    write_text(path, buffer.getvalue())


def plot_loss_curve(path: Path, rows: list[dict[str, Any]]) -> Path | None:
    """Loss terms per epoch as a PNG; ``None`` when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    from afsd_cli.io import save_figure

    epochs = [r["epoch"] for r in rows]
    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    for key in ("total", *TERM_NAMES):
        values = [r.get(key, float("nan")) for r in rows]
        if all(not (v > 0) for v in values):  # nothing to draw on a log axis (e.g. ssl = 0)
            continue
        axis.plot(epochs, values, marker="o", linewidth=2.2 if key == "total" else 1.2, label=key)
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.set_ylabel("weighted loss (epoch mean)")
    axis.set_yscale("log")
    axis.grid(True, alpha=0.3)
    if axis.lines:
        axis.legend(fontsize=8, ncol=3)
    figure.tight_layout()
    save_figure(path, figure, dpi=110)
    return path


def _worker_init(worker_id: int) -> None:
    # the dataset draws from per-sample generators; seed the globals anyway for any library use
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def build_loader(dataset: Any, cfg: Any, ctx: DistributedContext, device: torch.device,
                 num_workers: int, seed: int):
    from torch.utils.data import DataLoader, DistributedSampler

    from afsd_cli.data.datasets import collate_training

    # One sampler for every case: with one replica it is a seeded per-epoch shuffle, so a
    # single-GPU run equals the non-distributed path and resumed runs see the same order.
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=seed, drop_last=True)
    generator = torch.Generator()
    generator.manual_seed(seed)
    loader = DataLoader(
        dataset, batch_size=int(cfg.training.batch_size), sampler=sampler, num_workers=num_workers,
        collate_fn=collate_training, pin_memory=device.type == "cuda", drop_last=True,
        worker_init_fn=_worker_init if num_workers else None, generator=generator,
        persistent_workers=False,  # workers are re-created per epoch and pick up set_epoch
    )
    return loader, sampler


def train(
    cfg: Any,
    run_dir: str | Path | Callable[[], Path],
    resume: bool = False,
    options: TrainOptions | None = None,
    callback: Callback | None = None,
    dataset: Any = None,
    validate: Callable[[nn.Module, int], float | None] | None = None,
) -> TrainResult:
    """Train the model ``cfg`` describes, writing into ``run_dir`` (see the module docstring).

    ``run_dir`` may be a callable (e.g. ``lambda: new_run_dir(base)``): it is then evaluated on
    rank 0 only and the result shared with the other ranks.

    ``resume``: continue the run in ``run_dir`` after its latest saved epoch. ``dataset``
    replaces the config's training data (tests, benchmarks). ``validate(model, epoch)`` returns
    a validation mAP (the default uses ``afsd predict`` + ``afsd evaluate`` on the testing split
    when ``training.validate_every`` > 0).
    """
    from afsd_cli.data.datasets import build_training_dataset
    from afsd_cli.model import build_model, load_checkpoint, save_checkpoint
    from afsd_cli.io import save_torch
    from afsd_cli.model.checkpoints import read_torch_file

    options = options or TrainOptions()
    emit = callback or (lambda event: None)
    training = cfg.training
    amp = (options.amp or getattr(training, "amp", "off") or "off").lower()
    if amp not in ("off", *AMP_DTYPES):
        raise ConfigError(f"unknown AMP mode {amp!r} (expected off, bf16 or fp16)")
    if not bool(getattr(training, "focal_loss", True)):
        raise ConfigError("training.focal_loss=false is not supported: AFSD's classification terms are focal losses "
                          "(the official code fails without it too)")
    device_kind = "cuda" if (options.device or "auto").startswith("cuda") or (
        (options.device or "auto") == "auto" and torch.cuda.is_available()) else "cpu"
    ctx = init_distributed(device_kind)
    started_folder: str | None = None  # set once this process has written into the run folder
    saved_any = False  # a checkpoint of this run exists: from then on the folder is worth keeping
    try:
        run_dir = _shared_run_dir(run_dir, ctx)
        device = resolve_device(options.device, ctx)
        if amp == "fp16" and device.type != "cuda":
            raise ConfigError("--amp fp16 needs a CUDA device (use bf16 on CPU)")
        seed = int(training.random_seed)
        max_epoch = int(options.max_epoch or training.max_epoch)
        seed_everything(seed)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = False

        model = build_model(cfg, load_backbone=bool(getattr(cfg.model, "backbone_model", None)) and not resume)
        if getattr(model, "backbone_report", None) is not None:
            emit({"kind": "info", "message": "I3D weights: " + model.backbone_report.summary()})
        elif not resume and model.spec.input == "frames":
            emit({"kind": "warning", "message": "model.backbone_model is not set: the backbone starts from random weights"})
        model.to(device)
        # train mode first: it freezes the backbone BN affine parameters (requires_grad False),
        # which DDP must know before it registers the parameters it reduces
        model.train()
        settings = loss_settings_from_config(cfg, model.spec)
        optimizer = build_optimizer(model, cfg)
        scaler = torch.amp.GradScaler(device.type, enabled=(amp == "fp16"))
        legacy = bool(getattr(cfg.model, "legacy_bmp_grad", False))

        start_epoch, rows, best = 1, [], {"epoch": None, "map": None}
        if resume:
            last = latest_state_epoch(run_dir)
            if last is None:
                raise TrainingError(f"nothing to resume: no {STATE_DIR}/state-*.pt (no epoch was saved); start "
                                    f"a new run (the same --name works for a folder that never trained)", run_dir)
            load_checkpoint(model, run_dir / f"checkpoint-{last}.ckpt", strict=True)
            state = read_torch_file(run_dir / STATE_DIR / f"state-{last}.pt", error=TrainingError)
            optimizer.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            best = dict(state.get("best") or best)
            start_epoch = last + 1
            rows = _read_metrics(run_dir / "metrics.csv", last)
            emit({"kind": "info", "message": f"resuming {run_dir} after epoch {last}"})

        wrapped: nn.Module = model
        if ctx.enabled:
            wrapped = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)

        # Everything that can fail on bad input is checked before the run folder exists, so a
        # failed start leaves nothing behind that blocks a rerun under the same --name.
        if dataset is None:
            dataset = build_training_dataset(cfg)
        workers = int(options.num_workers if options.num_workers is not None else getattr(training, "num_workers", 2))
        loader, sampler = build_loader(dataset, cfg, ctx, device, workers, seed)
        steps_per_epoch = len(loader)
        if options.max_steps_per_epoch:
            steps_per_epoch = min(steps_per_epoch, options.max_steps_per_epoch)
        if steps_per_epoch == 0:
            raise TrainingError(f"no full batch: {len(dataset)} windows for batch size {training.batch_size}"
                                f" x {ctx.world_size} process(es)")
        grad_clip = float(getattr(training, "grad_clip", 0.0) or 0.0)
        skip_nonfinite = bool(getattr(training, "skip_nonfinite", False))
        validate_every = int(getattr(training, "validate_every", 0) or 0)
        checkpoint_every = int(getattr(training, "checkpoint_every", 1) or 1)
        keep_every = parse_keep_checkpoints(getattr(training, "keep_checkpoints", None))
        clip_frames = int(model.spec.clip_length)
        result = TrainResult(run_dir, rows, best["epoch"], best["map"])

        if ctx.is_main:
            started_folder = _start_run_folder(run_dir, resume, cfg, environment_report(device, ctx.world_size, amp))
        for epoch in range(start_epoch, max_epoch + 1):
            model.train()
            sampler.set_epoch(epoch)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            emit({"kind": "epoch_start", "epoch": epoch, "max_epoch": max_epoch, "steps": steps_per_epoch})
            step_rows: list[dict[str, float]] = []
            skipped = 0
            amp_skipped = 0  # optimiser steps the fp16 GradScaler dropped (inf/NaN gradients)
            started = time.perf_counter()
            for step, batch in enumerate(loader, start=1):
                if step > steps_per_epoch:
                    break
                terms = compute_losses(wrapped, model, batch, settings, device, amp, legacy)
                weighted = weighted_terms(terms, settings)
                total = sum(weighted[name] for name in TERM_NAMES)
                bad = [name for name in TERM_NAMES if not bool(torch.isfinite(weighted[name].detach()))]
                if ctx.enabled:  # every rank must take the same decision
                    import torch.distributed as dist

                    flag = torch.tensor([1.0 if bad else 0.0], device=device)
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    if flag.item() and not bad:
                        bad = ["(another rank)"]
                if bad:
                    if not skip_nonfinite:
                        raise TrainingError(
                            f"non-finite loss at epoch {epoch}, step {step}: term(s) {', '.join(bad)} "
                            f"(set training.skip_nonfinite=true to skip such steps)")
                    skipped += 1
                    optimizer.zero_grad(set_to_none=True)
                    emit({"kind": "skipped_step", "epoch": epoch, "step": step, "terms": bad})
                    continue
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(total).backward()
                if grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                scale = scaler.get_scale() if scaler.is_enabled() else None
                scaler.step(optimizer)
                scaler.update()
                # The scaler lowers its scale exactly when it found inf/NaN gradients and skipped
                # the optimiser step (it starts at 2**16 and calibrates down on the first steps).
                if scale is not None and scaler.get_scale() < scale:
                    amp_skipped += 1
                values = {name: float(weighted[name].detach()) for name in TERM_NAMES}
                values["total"] = float(total.detach())
                step_rows.append(values)
                emit({"kind": "step", "epoch": epoch, "step": step, "steps": steps_per_epoch, "losses": values})
            seconds = time.perf_counter() - started
            done = len(step_rows)
            row: dict[str, Any] = {"epoch": epoch, "total": _mean(step_rows, "total")}
            row.update({name: _mean(step_rows, name) for name in TERM_NAMES})
            row.update({
                "steps": done, "skipped_steps": skipped, "amp_skipped_steps": amp_skipped,
                "lr_backbone": optimizer.param_groups[0]["lr"], "lr_head": optimizer.param_groups[1]["lr"],
                "seconds": seconds,
                "frames_per_second": done * int(training.batch_size) * ctx.world_size * clip_frames / max(seconds, 1e-9),
                "val_map": float("nan"),
            })

            rows.append(row)
            validating = bool(validate_every) and epoch % validate_every == 0
            if ctx.is_main:
                if validating or epoch % checkpoint_every == 0 or epoch == max_epoch:
                    save_checkpoint(model, run_dir / f"checkpoint-{epoch}.ckpt")
                    saved_any = True
                    emit({"kind": "checkpoint", "epoch": epoch, "path": str(run_dir / f"checkpoint-{epoch}.ckpt")})
                if validating:
                    hook = validate or default_validation(cfg, run_dir, device, emit)
                    model.eval()
                    value = hook(model, epoch)
                    model.train()
                    if value is not None:
                        row["val_map"] = float(value)
                        emit({"kind": "validation", "epoch": epoch, "map": float(value)})
                        if best["map"] is None or value > best["map"]:
                            best = {"epoch": epoch, "map": float(value)}
                            save_checkpoint(model, run_dir / "checkpoint-best.ckpt")
                if epoch % checkpoint_every == 0 or epoch == max_epoch:
                    save_torch(run_dir / STATE_DIR / f"state-{epoch}.pt", {
                        "epoch": epoch,
                        "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                        "rng": rng_state(),
                        "best": best,
                    })
                # retention: the last (and best) epoch by default, see afsd_cli/runs.py
                prune_checkpoints(run_dir, keep_every, from_epoch=start_epoch - 1)
                training_run_config(run_dir, cfg)
                _write_metrics(run_dir / "metrics.csv", rows)
                plot_loss_curve(run_dir / "loss_curve.png", rows)
            emit({"kind": "epoch_end", "epoch": epoch, "metrics": row})
        result.epochs, result.best_epoch, result.best_map = rows, best["epoch"], best["map"]
        result.model = model
        return result
    except BaseException:
        if started_folder is not None and not saved_any:
            _undo_run_start(run_dir, started_folder)
        raise
    finally:
        if ctx.initialised_here:
            import torch.distributed as dist

            dist.destroy_process_group()


def _start_run_folder(run_dir: Path, resume: bool, cfg: Any, environment: dict[str, Any]) -> str:
    """Create or reopen the run folder and write ``config.yaml`` and ``env.json``.

    Returns how it was found ("new", "empty" or "existing"), which tells ``_undo_run_start`` what
    to remove. On resume ``env.json`` keeps the original start and gains a ``resumes`` record."""
    from afsd_cli.io import remove_stale_temp_files, write_json

    state = "existing" if resume else ("empty" if run_dir.is_dir() else "new")
    if not resume and run_dir.is_dir() and not never_trained(run_dir):
        raise ConfigError(f"run folder {run_dir} already exists; pick another --name or use --resume {run_dir}")
    if not resume and state == "empty":
        _clear_folder(run_dir)  # what a killed start left (config.yaml, env.json, temp files)
    run_dir.mkdir(parents=True, exist_ok=True)
    for folder in (run_dir, run_dir / STATE_DIR):
        remove_stale_temp_files(folder)  # e.g. a half-written state-N.pt of a killed run
    if resume:
        environment = _with_resume_record(run_dir / "env.json", environment)
    training_run_config(run_dir, cfg)
    from afsd_cli.profile import resolve_profile

    write_json(run_dir / "profile.json", resolve_profile(cfg).to_dict())  # what the dataset is
    write_json(run_dir / "env.json", environment)
    return state


def _with_resume_record(path: Path, environment: dict[str, Any]) -> dict[str, Any]:
    """The original ``env.json`` plus this resume appended to its ``resumes`` list."""
    import json

    try:
        original = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        original = None
    if not isinstance(original, dict):
        return {**environment, "resumes": []}  # no readable original: this start becomes the record
    resumes = original.get("resumes") if isinstance(original.get("resumes"), list) else []
    return {**original, "resumes": [*resumes, environment]}


def _clear_folder(folder: Path) -> None:
    import shutil

    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _undo_run_start(run_dir: Path, state: str) -> None:
    """Remove what a start that failed before its first checkpoint wrote, so a rerun under the same
    name starts cleanly (a resumed run keeps its folder: only new files would be lost)."""
    import shutil

    if state == "new":
        shutil.rmtree(run_dir, ignore_errors=True)
    elif state == "empty":
        _clear_folder(run_dir)


def _shared_run_dir(run_dir: str | Path | Callable[[], Path], ctx: DistributedContext) -> Path:
    if not callable(run_dir):
        return Path(run_dir)
    if not ctx.enabled:
        return Path(run_dir())
    import torch.distributed as dist

    shared = [str(run_dir()) if ctx.is_main else None]
    dist.broadcast_object_list(shared, src=0)
    return Path(shared[0])


def default_validation(cfg: Any, run_dir: Path, device: torch.device, emit: Callback
                       ) -> Callable[[nn.Module, int], float | None]:
    """Validation through the inference and evaluation APIs: predict on ``dataset.testing``,
    evaluate against ``dataset.testing.gt_path`` (subset ``dataset.testing.subset``), return the
    average mAP of ``checkpoint-{E}.ckpt``. The detections go to ``run_dir/validation/epoch-{E}.json``."""

    def run(model: nn.Module, epoch: int) -> float | None:
        try:
            from afsd_cli.engine.validation import validation_map
        except ImportError:
            emit({"kind": "warning", "message": "validation is not available in this build; skipped"})
            return None
        return validation_map(cfg, run_dir / f"checkpoint-{epoch}.ckpt",
                              run_dir / "validation" / f"epoch-{epoch}.json", device=str(device),
                              progress=lambda done, total: emit({"kind": "validation_progress", "epoch": epoch,
                                                                 "done": done, "total": total}))

    return run
