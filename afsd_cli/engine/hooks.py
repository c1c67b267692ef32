"""What happens after each training epoch, on the main process: a short list of hooks, each one job.

``Trainer.after_epoch`` (``engine/trainer.py``) runs the list ``epoch_end_hooks`` builds, in order
(the idea of detectron2's ``engine/hooks.py``):

1. ``SaveEpochModel``   ``checkpoint-{E}.ckpt`` (the official layout) when the epoch is saved or validated
2. ``Validate``         the validation mAP every ``training.validate_every`` epochs, into the metrics row
3. ``KeepBestModel``    ``checkpoint-best.ckpt`` when that mAP is the best so far
4. ``SaveResumeState``  ``training/state-{E}.pt``: what ``--resume`` needs besides the model
5. ``KeepCheckpoints``  retention (``training.keep_checkpoints``) and ``config.yaml`` naming the kept model
6. ``WriteMetrics``     ``metrics.csv`` and ``loss_curve.png``

The order matters: the state of 4 records the best epoch 3 decided, 5 prunes after every save and
6 writes the row 2 completed. The hooks read the run's state from the trainer (``epoch``, ``model``:
the bare network, never the DDP wrapper, ``history``, ``best``) and write back ``val_map``,
``best`` and the row's ``val_map``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from afsd_cli.engine.training_metrics import plot_loss_curve, write_metrics
from afsd_cli.errors import InputError
from afsd_cli.runs import BEST_CHECKPOINT, STATE_DIR, parse_keep_checkpoints, prune_checkpoints, training_run_config

if TYPE_CHECKING:
    from torch import nn

    from afsd_cli.config import Config
    from afsd_cli.engine.trainer import Callback, RunFolder, Trainer

#: ``validate(model, epoch)``: the validation mAP of the bare network (in eval mode), or ``None``
#: for nothing to record.
Validator = Callable[["nn.Module", int], "float | None"]


@dataclass(frozen=True)
class BestEpoch:
    """The epoch of the highest validation mAP so far (``None``s before any validation); saved in
    every ``training/state-{E}.pt`` so that a resumed run keeps comparing against it."""

    epoch: int | None = None
    map: float | None = None


@dataclass(frozen=True)
class EpochSchedule:
    """Which epochs are saved (``training.checkpoint_every``, and always the last) and validated
    (``training.validate_every``, 0 = never)."""

    checkpoint_every: int
    validate_every: int
    max_epoch: int

    def validates(self, epoch: int) -> bool:
        return bool(self.validate_every) and epoch % self.validate_every == 0

    def saves_state(self, epoch: int) -> bool:
        return epoch % self.checkpoint_every == 0 or epoch == self.max_epoch

    def saves_model(self, epoch: int) -> bool:
        # validated epochs too, as afsd always has: with keep_checkpoints=all every epoch with a
        # val_map in metrics.csv has its model on disk
        return self.validates(epoch) or self.saves_state(epoch)


class EpochEndHook:
    """One job done after each epoch; ``trainer`` is the run's state (``engine/trainer.py Trainer``)."""

    def after_epoch(self, trainer: Trainer) -> None:
        raise NotImplementedError


def epoch_end_hooks(trainer: Trainer, validate: Validator | None) -> list[EpochEndHook]:
    """The hooks of the main process, in the order they run; ``validate`` defaults to
    ``validation_on_testing_split``."""
    cfg, folder = trainer.cfg, trainer.folder
    schedule = EpochSchedule(cfg.training.checkpoint_every, cfg.training.validate_every, trainer.max_epoch)
    if validate is None:
        validate = validation_on_testing_split(cfg, folder.path, str(trainer.device), trainer.emit)
    return [
        SaveEpochModel(folder, schedule),
        Validate(schedule, validate),
        KeepBestModel(folder),
        SaveResumeState(folder, schedule),
        KeepCheckpoints(folder, cfg),
        WriteMetrics(folder),
    ]


class SaveEpochModel(EpochEndHook):
    def __init__(self, folder: RunFolder, schedule: EpochSchedule):
        self.folder, self.schedule = folder, schedule

    def after_epoch(self, trainer: Trainer) -> None:
        if self.schedule.saves_model(trainer.epoch):
            path = self.folder.save_model(trainer.model, f"checkpoint-{trainer.epoch}.ckpt")
            trainer.emit({"kind": "checkpoint", "epoch": trainer.epoch, "path": str(path)})


class Validate(EpochEndHook):
    def __init__(self, schedule: EpochSchedule, validate: Validator):
        self.schedule, self.validate = schedule, validate

    def after_epoch(self, trainer: Trainer) -> None:
        if not self.schedule.validates(trainer.epoch):
            return
        model = trainer.model
        model.eval()
        try:
            value = self.validate(model, trainer.epoch)
        except InputError as exc:
            # a held-out video that cannot be read costs this epoch's mAP, not the training run:
            # said loudly, no val_map recorded (the best model is not chosen on a partial mAP)
            trainer.emit({"kind": "warning", "message": f"validation of epoch {trainer.epoch} skipped: {exc}"})
            value = None
        finally:
            model.train()
        if value is not None:  # a validate callable may have nothing to record
            trainer.val_map = float(value)
            trainer.history[-1]["val_map"] = float(value)
            trainer.emit({"kind": "validation", "epoch": trainer.epoch, "map": float(value)})


class KeepBestModel(EpochEndHook):
    def __init__(self, folder: RunFolder):
        self.folder = folder

    def after_epoch(self, trainer: Trainer) -> None:
        value, best = trainer.val_map, trainer.best
        if value is not None and (best.map is None or value > best.map):
            trainer.best = BestEpoch(trainer.epoch, value)
            self.folder.save_model(trainer.model, BEST_CHECKPOINT)


class SaveResumeState(EpochEndHook):
    def __init__(self, folder: RunFolder, schedule: EpochSchedule):
        self.folder, self.schedule = folder, schedule

    def after_epoch(self, trainer: Trainer) -> None:
        from afsd_cli.io import save_torch

        if self.schedule.saves_state(trainer.epoch):
            save_torch(self.folder.path / STATE_DIR / f"state-{trainer.epoch}.pt", trainer.resume_state())


class KeepCheckpoints(EpochEndHook):
    def __init__(self, folder: RunFolder, cfg: Config):
        self.folder, self.cfg = folder, cfg
        self.every = parse_keep_checkpoints(cfg.training.keep_checkpoints)

    def after_epoch(self, trainer: Trainer) -> None:
        # the last (and the best) epoch by default; files from before this start are left alone
        # (afsd_cli/runs.py prune_checkpoints)
        prune_checkpoints(self.folder.path, self.every, from_epoch=trainer.start_epoch - 1)
        training_run_config(self.folder.path, self.cfg)  # testing.checkpoint_path: the model kept now


class WriteMetrics(EpochEndHook):
    def __init__(self, folder: RunFolder):
        self.folder = folder

    def after_epoch(self, trainer: Trainer) -> None:
        write_metrics(self.folder.path / "metrics.csv", trainer.history)
        plot_loss_curve(self.folder.path / "loss_curve.png", trainer.history)


def validation_on_testing_split(cfg: Config, run_dir: Path, device: str, emit: Callback) -> Validator:
    """The default ``validate``: ``afsd predict`` + ``afsd evaluate`` through their Python APIs on
    ``dataset.testing`` against ``dataset.testing.gt_path`` (``engine/validation.py``), with
    ``validation_progress`` events; the detections go to ``run_dir/validation/epoch-{E}.json``."""

    from afsd_cli.engine.validation import check_validation_inputs, validation_map

    # before the first epoch, not at its end; the ground truth is read once for every epoch
    ground_truth = check_validation_inputs(cfg) if cfg.training.validate_every else None

    def validate(model: nn.Module, epoch: int) -> float:
        def progress(done: int, total: int) -> None:
            emit({"kind": "validation_progress", "epoch": epoch, "done": done, "total": total})

        output = run_dir / "validation" / f"epoch-{epoch}.json"
        return validation_map(cfg, model, output, device=device, progress=progress, ground_truth=ground_truth)

    return validate
