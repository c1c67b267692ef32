"""Run folders as inputs: ``afsd predict RUN_DIR`` / ``--checkpoint RUN_DIR``.

A training run folder (``runs/train/<name>/``) holds everything inference needs: the resolved
``config.yaml`` and the checkpoints. :func:`resolve_run` is the one place that turns a path
given on the command line (a config file, a checkpoint file or a run folder) into the pair
``(config file, checkpoint file)``.
"""

from __future__ import annotations

import re
from pathlib import Path

from afsd_cli.errors import ConfigError

RUN_CONFIG = "config.yaml"
BEST_CHECKPOINT = "checkpoint-best.ckpt"
_EPOCH_CHECKPOINT = re.compile(r"checkpoint-(\d+)\.ckpt")


def is_run_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / RUN_CONFIG).is_file()


def run_checkpoint(run_dir: str | Path) -> Path:
    """The run's best checkpoint (``checkpoint-best.ckpt``, written when validating), else its last epoch's."""
    run_dir = Path(run_dir)
    best = run_dir / BEST_CHECKPOINT
    if best.is_file():
        return best
    epochs = [(int(m.group(1)), p) for p in run_dir.glob("checkpoint-*.ckpt")
              if (m := _EPOCH_CHECKPOINT.fullmatch(p.name))]
    if not epochs:
        raise ConfigError("no checkpoint in this run folder (checkpoint-best.ckpt or checkpoint-<epoch>.ckpt)",
                          run_dir)
    return max(epochs)[1]


def resolve_run(path: str | Path, checkpoint: str | Path | None = None) -> tuple[Path, Path | None]:
    """``(config file, checkpoint or None)`` of a config file or a run folder.

    A run folder gives its ``config.yaml`` and, unless ``checkpoint`` is given, its best (else
    last) checkpoint. ``checkpoint`` itself may be a run folder (its checkpoint is taken).
    """
    path = Path(path)
    if path.is_dir():
        if not is_run_dir(path):
            raise ConfigError(f"a folder without {RUN_CONFIG}: expected a config file or a training run folder", path)
        config = path / RUN_CONFIG
        if checkpoint is None:
            return config, run_checkpoint(path)
    else:
        config = path
    return config, resolve_checkpoint(checkpoint)


def resolve_checkpoint(checkpoint: str | Path | None) -> Path | None:
    """A checkpoint file, or the best (else last) checkpoint of a run folder."""
    if checkpoint is None:
        return None
    checkpoint = Path(checkpoint)
    return run_checkpoint(checkpoint) if checkpoint.is_dir() else checkpoint
