"""The training loop (official ``{thumos14,anet}/train.py``): one process, or one process per GPU under ``torchrun``.

``train(cfg, ...)`` builds the model, data and optimiser a config describes and runs the epochs,
writing everything into one run folder:

* ``config.yaml`` (resolved), ``profile.json`` (the dataset), ``env.json`` (versions, devices, command),
* ``metrics.csv`` (every weighted loss term per epoch, total, learning rates, seconds, frames/s,
  validation mAP when enabled) and ``loss_curve.png`` (when matplotlib is installed),
* ``checkpoint-{epoch}.ckpt``: the bare model state dict in the official layout,
* ``training/state-{epoch}.pt``: optimiser, grad scaler, RNG states and bookkeeping, readable
  with ``torch.load(weights_only=True)``.

Only the last epoch's model and state and ``checkpoint-best.ckpt`` are kept unless
``training.keep_checkpoints`` asks for more (``afsd_cli.runs.prune_checkpoints``); the run's
``config.yaml`` names the run's own checkpoint (``afsd_cli.runs.training_run_config``).

The loop has the shape of detectron2's ``TrainerBase``: ``Trainer.train`` is ``before_train``, then
per epoch ``run_epoch`` (one ``run_step`` per batch) and ``after_epoch``, whose jobs (checkpoints,
validation, best model, retention, metrics) are the hooks of ``afsd_cli/engine/hooks.py``.

Randomness is a function of ``(seed, epoch, index)`` (see ``afsd_cli.data.datasets``) and the
per-epoch shuffle of ``DistributedSampler(seed)``; with the model and optimiser state restored a
resumed run therefore continues with exactly the losses an uninterrupted one would have.

The library never prints: progress goes to ``callback(event: dict)``; errors are raised as
``TrainingError`` / ``ConfigError`` / ``InputError``.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from afsd_cli.engine.hooks import BestEpoch, EpochEndHook, Validator, epoch_end_hooks
from afsd_cli.engine.losses import TERM_NAMES, LossSettings, consistency_loss, detection_losses, weighted_terms
from afsd_cli.engine.training_metrics import EpochTally, read_metrics
from afsd_cli.errors import ConfigError, TrainingError
from afsd_cli.runs import STATE_DIR, epoch_states, training_run_config

if TYPE_CHECKING:
    from afsd_cli.config import Config
    from afsd_cli.model.afsd import ModelSpec

Callback = Callable[[dict[str, Any]], None]


# --------------------------------------------------------------------------------------------
# Run folders, environment, RNG state
# --------------------------------------------------------------------------------------------
def new_run_dir(base: str | Path = "runs/train", name: str | None = None) -> Path:
    """``afsd_cli.runs.new_run_dir`` for training (not created: ``train`` creates it, so that a
    failed start can remove it again); kept here for the old import."""
    from afsd_cli.runs import new_run_dir as next_free

    return next_free(base, name, reuse_hint="continue it with --resume", create=False)


class RunFolder:
    """The run folder as the main process opened it. How it was found decides what a failed start
    removes; models are saved through it, so it knows when it became worth keeping."""

    def __init__(self, path: Path, found: str):
        self.path = path
        self.found = found  # "new", "empty" (a start that never trained left it) or "existing" (resume)
        self.holds_model = False

    @classmethod
    def open(cls, path: Path, resume: bool, cfg: Config, environment: dict[str, Any]) -> RunFolder:
        """Create or reopen the run folder and write ``config.yaml``, ``profile.json`` and
        ``env.json``. On resume ``env.json`` keeps the original start and gains a ``resumes`` record."""
        from afsd_cli.io import remove_stale_temp_files, write_json
        from afsd_cli.profile import resolve_profile
        from afsd_cli.runs import is_unused_run_dir

        found = "existing" if resume else ("empty" if path.is_dir() else "new")
        if not resume and path.is_dir() and not is_unused_run_dir(path):
            raise ConfigError(f"run folder {path} already exists; pick another --name or use --resume {path}")
        if found == "empty":
            _clear_folder(path)  # what a killed start left (config.yaml, env.json, temp files)
        path.mkdir(parents=True, exist_ok=True)
        for folder in (path, path / STATE_DIR):
            remove_stale_temp_files(folder)  # e.g. a half-written state-N.pt of a killed run
        if resume:
            environment = _with_resume_record(path / "env.json", environment)
        training_run_config(path, cfg)
        write_json(path / "profile.json", resolve_profile(cfg).to_dict())  # what the dataset is
        write_json(path / "env.json", environment)
        return cls(path, found)

    def save_model(self, model: nn.Module, name: str) -> Path:
        from afsd_cli.model import save_checkpoint

        path = save_checkpoint(model, self.path / name)
        self.holds_model = True
        return path

    def undo_start(self) -> None:
        """Remove what a start that failed before its first checkpoint wrote, so a rerun under the
        same name starts cleanly (a resumed run keeps its folder: only new files would be lost)."""
        import shutil

        if self.holds_model:
            return
        if self.found == "new":
            shutil.rmtree(self.path, ignore_errors=True)
        elif self.found == "empty":
            _clear_folder(self.path)


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
    """The last epoch with a ``training/state-{E}.pt``: where ``--resume`` continues."""
    return max(epoch_states(run_dir), default=None)


# --------------------------------------------------------------------------------------------
# Settings derived from the config
# --------------------------------------------------------------------------------------------
def loss_settings_from_config(cfg: Config, spec: ModelSpec) -> LossSettings:
    from afsd_cli.profile import resolve_profile

    training = cfg.training
    return LossSettings.official(
        resolve_profile(cfg).rules.loss_procedure,
        num_classes=spec.model_classes,
        clip_length=spec.clip_length,
        lw=training.lw,
        cw=training.cw,
        piou=training.piou,
        ssl=training.ssl,
        mask_downsample=spec.head.level0_stride,
    )


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """Adam with coupled L2 (as ``train.py``): group 0 = backbone at ``lr × backbone_lr_scale``, group 1 = head
    at ``lr``. Frozen BN parameters are included (never updated, as in the official code)."""
    training = cfg.training
    lr, decay = training.learning_rate, training.weight_decay
    # the profile sets the scale per kind of dataset (afsd_cli/profile.py); unset reads as 1
    scale = 1.0 if training.backbone_lr_scale is None else training.backbone_lr_scale
    return torch.optim.Adam([
        {"params": list(model.backbone.parameters()), "lr": lr * scale, "weight_decay": decay, "name": "backbone"},
        {"params": list(model.coarse_pyramid_detection.parameters()), "lr": lr, "weight_decay": decay, "name": "head"},
    ])


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _amp_mode(requested: str) -> str:
    amp = requested.lower()
    if amp not in ("off", *AMP_DTYPES):
        raise ConfigError(f"unknown AMP mode {amp!r} (expected off, bf16 or fp16)")
    return amp


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


def leave_distributed(ctx: DistributedContext) -> None:
    """Destroy the process group if ``init_distributed`` created it."""
    if ctx.initialised_here:
        import torch.distributed as dist

        dist.destroy_process_group()


def _device_kind(requested: str | None) -> str:
    """``cuda`` or ``cpu``: which process-group backend ``init_distributed`` needs, known before
    the device itself is resolved."""
    requested = requested or "auto"
    return "cuda" if requested.startswith("cuda") or (requested == "auto" and torch.cuda.is_available()) else "cpu"


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


def _shared_run_dir(run_dir: str | Path | Callable[[], Path], ctx: DistributedContext) -> Path:
    """``run_dir``, or what the callable returns on rank 0, the same on every rank."""
    if not callable(run_dir):
        return Path(run_dir)
    if not ctx.enabled:
        return Path(run_dir())
    import torch.distributed as dist

    shared = [str(run_dir()) if ctx.is_main else None]
    dist.broadcast_object_list(shared, src=0)
    return Path(shared[0])


def _data_parallel(model: nn.Module, ctx: DistributedContext, device: torch.device) -> nn.Module:
    """What the forward pass goes through: the DDP wrapper when distributed, else the model."""
    if not ctx.enabled:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is set on any rank (every rank must call it)."""
    import torch.distributed as dist

    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


# --------------------------------------------------------------------------------------------
# One step's losses
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
# Data
# --------------------------------------------------------------------------------------------
def _worker_init(worker_id: int) -> None:
    # the dataset draws from per-sample generators; seed the globals anyway for any library use
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def build_loader(dataset: Any, cfg: Config, ctx: DistributedContext, device: torch.device,
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
        dataset, batch_size=cfg.training.batch_size, sampler=sampler, num_workers=num_workers,
        collate_fn=collate_training, pin_memory=device.type == "cuda", drop_last=True,
        worker_init_fn=_worker_init if num_workers else None, generator=generator,
        persistent_workers=False,  # workers are re-created per epoch and pick up set_epoch
    )
    return loader, sampler


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


def train(
    cfg: Config,
    run_dir: str | Path | Callable[[], Path],
    resume: bool = False,
    options: TrainOptions | None = None,
    callback: Callback | None = None,
    dataset: Any = None,
    validate: Validator | None = None,
) -> TrainResult:
    """Train the model ``cfg`` describes, writing into ``run_dir`` (see the module docstring).

    ``run_dir`` may be a callable (e.g. ``lambda: new_run_dir(base)``): it is then evaluated on
    rank 0 only and the result shared with the other ranks.

    ``resume``: continue the run in ``run_dir`` after its latest saved epoch. ``dataset``
    replaces the config's training data (tests, benchmarks). ``validate(model, epoch)`` returns
    a validation mAP (the default uses ``afsd predict`` + ``afsd evaluate`` on the testing split
    when ``training.validate_every`` > 0).
    """
    trainer = Trainer(cfg, options or TrainOptions(), callback or (lambda event: None))
    return trainer.train(run_dir, resume, dataset, validate)


class Trainer:
    """One training run. ``train`` reads as its steps; the attributes are the run's state, which
    the epoch-end hooks (``afsd_cli/engine/hooks.py``) read and update: ``model`` (the bare network;
    ``wrapped`` is what the forward pass goes through), ``optimizer``, ``scaler``, ``epoch``,
    ``history`` (the metrics rows), ``best`` and ``val_map`` (this epoch's validation mAP or None)."""

    def __init__(self, cfg: Config, options: TrainOptions, emit: Callback):
        self.cfg, self.options, self.emit = cfg, options, emit
        self.amp = _amp_mode(options.amp or cfg.training.amp)
        if not cfg.training.focal_loss:
            raise ConfigError("training.focal_loss=false is not supported: AFSD's classification terms are focal "
                              "losses (the official code fails without it too)")
        self.max_epoch = options.max_epoch or cfg.training.max_epoch
        self.start_epoch = 1
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best = BestEpoch()
        self.val_map: float | None = None
        self.folder: RunFolder | None = None  # main process only, once it has written the run folder

    def train(self, run_dir: str | Path | Callable[[], Path], resume: bool, dataset: Any,
              validate: Validator | None) -> TrainResult:
        self.ctx = init_distributed(_device_kind(self.options.device))
        try:
            self.before_train(run_dir, resume, dataset)
            hooks = epoch_end_hooks(self, validate) if self.ctx.is_main else []
            for epoch in range(self.start_epoch, self.max_epoch + 1):
                self.run_epoch(epoch)
                self.after_epoch(hooks)
            return TrainResult(self.run_dir, self.history, self.best.epoch, self.best.map, self.model)
        except BaseException:
            if self.folder is not None:
                self.folder.undo_start()
            raise
        finally:
            leave_distributed(self.ctx)

    # ---------------------------------------------------------------------------- before_train
    def before_train(self, run_dir: str | Path | Callable[[], Path], resume: bool, dataset: Any) -> None:
        """Device, network, optimiser, the resumed epoch, data, then the run folder (main process):
        every check of the input comes first, so a failed start leaves nothing behind that blocks
        a rerun under the same --name."""
        self.run_dir = _shared_run_dir(run_dir, self.ctx)
        self.device = self._select_device()
        seed_everything(self.cfg.training.random_seed)  # before the network: its initial weights
        self.model = self._build_network(resume)
        self.settings = loss_settings_from_config(self.cfg, self.model.spec)
        self.optimizer = build_optimizer(self.model, self.cfg)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=(self.amp == "fp16"))
        if resume:
            self._restore_last_epoch()
        self.wrapped = _data_parallel(self.model, self.ctx, self.device)
        self._build_data(dataset)
        if self.ctx.is_main:
            environment = environment_report(self.device, self.ctx.world_size, self.amp)
            self.folder = RunFolder.open(self.run_dir, resume, self.cfg, environment)

    def _select_device(self) -> torch.device:
        device = resolve_device(self.options.device, self.ctx)
        if self.amp == "fp16" and device.type != "cuda":
            raise ConfigError("--amp fp16 needs a CUDA device (use bf16 on CPU)")
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = False
        return device

    def _build_network(self, resume: bool) -> nn.Module:
        from afsd_cli.model import build_model

        # a resumed run loads its own weights, the pretrained backbone would be overwritten
        model = build_model(self.cfg, load_backbone=bool(self.cfg.model.backbone_model) and not resume)
        if getattr(model, "backbone_report", None) is not None:
            self.emit({"kind": "info", "message": "I3D weights: " + model.backbone_report.summary()})
        elif not resume and model.spec.input == "frames":
            self.emit({"kind": "warning", "message": "model.backbone_model is not set: the backbone starts from "
                                                     "random weights"})
        model.to(self.device)
        # train mode first: it freezes the backbone BN affine parameters (requires_grad False),
        # which DDP must know before it registers the parameters it reduces
        model.train()
        return model

    def _restore_last_epoch(self) -> None:
        """Model, optimiser, scaler, RNG, best epoch and metrics rows of the last saved epoch."""
        from afsd_cli.model import load_checkpoint
        from afsd_cli.model.checkpoints import read_torch_file

        last = latest_state_epoch(self.run_dir)
        if last is None:
            raise TrainingError(f"nothing to resume: no {STATE_DIR}/state-*.pt (no epoch was saved); start "
                                f"a new run (the same --name works for a folder that never trained)", self.run_dir)
        load_checkpoint(self.model, self.run_dir / f"checkpoint-{last}.ckpt", strict=True)
        state = read_torch_file(self.run_dir / STATE_DIR / f"state-{last}.pt", error=TrainingError)
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.best = BestEpoch(**(state.get("best") or {}))
        self.start_epoch = last + 1
        self.history = read_metrics(self.run_dir / "metrics.csv", last)
        self.emit({"kind": "info", "message": f"resuming {self.run_dir} after epoch {last}"})

    def _build_data(self, dataset: Any) -> None:
        from afsd_cli.data.datasets import build_training_dataset

        self.dataset = build_training_dataset(self.cfg) if dataset is None else dataset
        options = self.options
        workers = self.cfg.training.num_workers if options.num_workers is None else options.num_workers
        self.loader, self.sampler = build_loader(self.dataset, self.cfg, self.ctx, self.device, workers,
                                                 self.cfg.training.random_seed)
        self.steps_per_epoch = len(self.loader)
        if options.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, options.max_steps_per_epoch)
        if self.steps_per_epoch == 0:
            raise TrainingError(f"no full batch: {len(self.dataset)} windows for batch size "
                                f"{self.cfg.training.batch_size} x {self.ctx.world_size} process(es)")

    # ---------------------------------------------------------------------------- the epoch
    def run_epoch(self, epoch: int) -> None:
        """Every step of ``epoch``; its metrics row joins ``history``."""
        self.before_epoch(epoch)
        for step, batch in enumerate(self.loader, start=1):
            if step > self.steps_per_epoch:  # TrainOptions.max_steps_per_epoch
                break
            self.run_step(step, batch)
        frames_per_step = self.cfg.training.batch_size * self.ctx.world_size * self.model.spec.clip_length
        self.history.append(self.tally.row(epoch, self.optimizer, frames_per_step))

    def before_epoch(self, epoch: int) -> None:
        self.epoch, self.val_map = epoch, None
        self.model.train()
        self.sampler.set_epoch(epoch)  # the shuffle, and the dataset's augmentation below
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self.emit({"kind": "epoch_start", "epoch": epoch, "max_epoch": self.max_epoch, "steps": self.steps_per_epoch})
        self.tally = EpochTally()

    def run_step(self, step: int, batch: Any) -> None:
        """One optimisation step: forward, weighted losses, the non-finite policy, backward (through
        the AMP scaler), gradient clipping, optimiser step; recorded in ``tally``."""
        terms = compute_losses(self.wrapped, self.model, batch, self.settings, self.device, self.amp,
                               self.cfg.model.legacy_bmp_grad)
        weighted = weighted_terms(terms, self.settings)
        total = sum(weighted[name] for name in TERM_NAMES)
        bad = self._non_finite_terms(weighted)
        if bad:
            self._skip_step(step, bad)
            return
        if self._optimise(total):
            self.tally.amp_skipped += 1
        losses = {name: float(weighted[name].detach()) for name in TERM_NAMES}
        losses["total"] = float(total.detach())
        self.tally.losses.append(losses)
        self.emit({"kind": "step", "epoch": self.epoch, "step": step, "steps": self.steps_per_epoch, "losses": losses})

    def _non_finite_terms(self, weighted: dict[str, torch.Tensor]) -> list[str]:
        """The weighted terms that are not finite. Under DDP every rank takes the same decision:
        a step one rank must skip is skipped by all (gradients are reduced across ranks)."""
        bad = [name for name in TERM_NAMES if not bool(torch.isfinite(weighted[name].detach()))]
        if self.ctx.enabled and _any_rank(bool(bad), self.device) and not bad:
            bad = ["(another rank)"]
        return bad

    def _skip_step(self, step: int, bad: list[str]) -> None:
        """``training.skip_nonfinite``: count and report the step, else stop the run."""
        if not self.cfg.training.skip_nonfinite:
            raise TrainingError(f"non-finite loss at epoch {self.epoch}, step {step}: term(s) {', '.join(bad)} "
                                f"(set training.skip_nonfinite=true to skip such steps)")
        self.tally.skipped += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.emit({"kind": "skipped_step", "epoch": self.epoch, "step": step, "terms": bad})

    def _optimise(self, total: torch.Tensor) -> bool:
        """Backward and optimiser step; True when the fp16 GradScaler dropped the step."""
        grad_clip = self.cfg.training.grad_clip
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # The scaler lowers its scale exactly when it found inf/NaN gradients and skipped the
        # optimiser step (it starts at 2**16 and calibrates down on the first steps).
        return scale is not None and self.scaler.get_scale() < scale

    def after_epoch(self, hooks: list[EpochEndHook]) -> None:
        """The epoch-end hooks (none but on the main process), then the ``epoch_end`` event."""
        for hook in hooks:
            hook.after_epoch(self)
        self.emit({"kind": "epoch_end", "epoch": self.epoch, "metrics": self.history[-1]})

    def resume_state(self) -> dict[str, Any]:
        """``training/state-{E}.pt``: with it (and the model) a resumed run continues exactly."""
        return {
            "epoch": self.epoch,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": rng_state(),
            "best": asdict(self.best),
        }
