"""Run folders: where every command puts its outputs, and how a run folder is read back.

Every command that produces results writes them into a run folder ``runs/<command>/<name>/``
(``runs/train/exp``, ``runs/predict/exp2``, ...) holding the outputs, the resolved
``config.yaml`` and ``env.json``. A training run folder is also a complete input: its
``config.yaml`` names the run's own checkpoint and ``find_checkpoint(run_dir)`` picks the best
epoch's model, else the last. :func:`resolve_run` is the one place that turns a path given on
the command line (a config file, a checkpoint file or a run folder) into the pair
``(config file, checkpoint file)`` (``afsd predict RUN_DIR``, ``--checkpoint RUN_DIR``).

This module never imports torch (``afsd evaluate`` uses it).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from afsd_cli.errors import ConfigError, InputError

if TYPE_CHECKING:
    from afsd_cli.config import Config

RUNS_ROOT = Path("runs")
CONFIG_NAME = "config.yaml"
ENV_NAME = "env.json"
PROFILE_NAME = "profile.json"  # a training run's dataset profile (afsd_cli.profile)
BEST_CHECKPOINT = "checkpoint-best.ckpt"
STATE_DIR = "training"
_EPOCH_CHECKPOINT = re.compile(r"checkpoint-(\d+)\.ckpt")
_EPOCH_STATE = re.compile(r"state-(\d+)\.pt")
_AUTO_NAME = re.compile(r"exp(\d*)")


def afsd_version() -> str:
    from afsd_cli import __version__

    return __version__


# --------------------------------------------------------------------------------------------
# Creating run folders
# --------------------------------------------------------------------------------------------
def default_runs_dir(command: str) -> Path:
    """``runs/<command>`` under the working directory (``$AFSD_RUNS/<command>`` when that is set):
    the folder holding that command's runs."""
    return Path(os.environ.get("AFSD_RUNS") or RUNS_ROOT) / command


def new_run_dir(base: str | Path, name: str | None = None, exist_ok: bool = False,
                reuse_hint: str = "pass --exist-ok to reuse it", create: bool = True) -> Path:
    """A fresh run folder under ``base`` (e.g. ``runs/predict``), created unless ``create`` is off
    (training creates its folder itself, so that a failed start can remove it again).

    Without ``name``: the next free ``exp``, ``exp2``, ``exp3``... With ``name``: ``base/name``,
    refused when it holds results (``is_unused_run_dir``) unless ``exist_ok``. ``exist_ok``
    without ``name`` reuses ``base/exp``. Creating the folder here claims it, so two runs started
    together never share one.
    """
    base = Path(base)
    check_run_name(base, name, exist_ok, reuse_hint)
    if name or exist_ok:
        path = base / (name or "exp")
        if create:
            _make_dir(path, exist_ok=True)
        return path
    number = max(_auto_numbers(base), default=0) + 1
    while True:
        path = base / ("exp" if number == 1 else f"exp{number}")
        if not create:
            if not path.exists():
                return path
        elif _make_dir(path, exist_ok=False):
            return path
        number += 1  # taken (by another run started in the meantime)


def is_unused_run_dir(path: str | Path) -> bool:
    """True for a folder holding no results: nothing but ``config.yaml`` / ``profile.json`` /
    ``env.json`` (what a start writes first), hidden temporary files and empty folders. Such a
    folder may be reused."""
    for entry in Path(path).rglob("*"):
        if entry.is_dir() or entry.name in (CONFIG_NAME, PROFILE_NAME, ENV_NAME) or entry.name.startswith("."):
            continue
        return False
    return True


def check_run_name(base: str | Path, name: str | None, exist_ok: bool = False,
                   reuse_hint: str = "pass --exist-ok to reuse it") -> None:
    """The errors ``new_run_dir`` would raise for ``name``, without creating anything (commands
    call it before their expensive work)."""
    if name is not None and (not name or Path(name).name != name or name in (".", "..")):
        raise ConfigError(f"--name {name!r}: a run name is one folder name (no '/')")
    if name and not exist_ok:
        path = Path(base) / name
        if path.exists() and not path.is_dir():
            raise ConfigError("run folder path is a file; pick another --name", path)
        if path.exists() and not is_unused_run_dir(path):
            raise ConfigError(f"run folder already exists; pick another --name or {reuse_hint}", path)


def _auto_numbers(base: Path) -> list[int]:
    if not base.is_dir():
        return []
    numbers = []
    for child in base.iterdir():
        match = _AUTO_NAME.fullmatch(child.name)
        if match:
            numbers.append(int(match.group(1) or 1))
    return numbers


def _make_dir(path: Path, exist_ok: bool) -> bool:
    """mkdir -p; ``False`` when ``path`` already existed and ``exist_ok`` is off."""
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        if exist_ok:  # a file in the way
            raise ConfigError("run folder path exists and is not a folder", path) from None
        return False
    except OSError as exc:
        raise ConfigError(f"cannot create the run folder: {exc.strerror or exc}", path) from None
    return True


@contextlib.contextmanager
def run_folder(base: str | Path, name: str | None = None, exist_ok: bool = False) -> Iterator[Path]:
    """``new_run_dir`` for one command; the folder is removed again when the command fails
    before writing anything into it (no empty ``expN`` left behind)."""
    path = new_run_dir(base, name, exist_ok)
    try:
        yield path
    except BaseException:
        with contextlib.suppress(OSError):
            path.rmdir()  # only succeeds when empty
        raise


def output_destination(command: str, output: str | Path | None, runs_dir: str | Path | None = None,
                       name: str | None = None, exist_ok: bool = False):
    """Where a command writes: ``(None, output)`` when ``--output`` names a file (exactly there, no
    run folder), else ``(run_folder(...), None)``, a context manager that claims the next run
    folder under ``runs_dir`` (default ``runs/<command>``) when entered."""
    check_output_options(command, output, name, exist_ok)
    if output is not None:
        return None, Path(output)
    base = runs_dir or default_runs_dir(command)
    check_run_name(base, name, exist_ok)  # now, not after the work
    return run_folder(base, name, exist_ok), None


def check_output_options(command: str, output: str | Path | None, name: str | None, exist_ok: bool) -> None:
    """``--output`` and ``--name``/``--exist-ok`` exclude each other (before any work is done)."""
    if output is not None and (name is not None or exist_ok):
        raise ConfigError(f"--output writes exactly where asked, without a run folder: drop --name/--exist-ok "
                          f"(or drop --output to get runs/{command}/<name>/)")


# --------------------------------------------------------------------------------------------
# Reading run folders
# --------------------------------------------------------------------------------------------
def epoch_checkpoints(run_dir: str | Path) -> dict[int, Path]:
    """``{epoch: path}`` of the ``checkpoint-<epoch>.ckpt`` files in a run folder."""
    run_dir = Path(run_dir)
    found = {}
    if run_dir.is_dir():
        for path in run_dir.iterdir():
            match = _EPOCH_CHECKPOINT.fullmatch(path.name)
            if match and path.is_file():
                found[int(match.group(1))] = path
    return found


def epoch_states(run_dir: str | Path) -> dict[int, Path]:
    """``{epoch: path}`` of the ``training/state-<epoch>.pt`` files (optimiser, RNG) of a run."""
    folder = Path(run_dir) / STATE_DIR
    found = {}
    if folder.is_dir():
        for path in folder.iterdir():
            match = _EPOCH_STATE.fullmatch(path.name)
            if match and path.is_file():
                found[int(match.group(1))] = path
    return found


def find_checkpoint(run_dir: str | Path) -> Path:
    """The model a training run folder stands for: ``checkpoint-best.ckpt`` (best validation
    mAP) when there is one, else the checkpoint of the last saved epoch."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError("not a run folder", run_dir)
    best = run_dir / BEST_CHECKPOINT
    if best.is_file():
        return best
    epochs = epoch_checkpoints(run_dir)
    if not epochs:
        raise InputError("no checkpoint in this run folder (checkpoint-best.ckpt or checkpoint-<epoch>.ckpt)",
                         run_dir)
    return epochs[max(epochs)]


def is_run_dir(path: str | Path) -> bool:
    """A folder holding a ``config.yaml`` (what every run folder starts with)."""
    return Path(path).is_dir() and (Path(path) / CONFIG_NAME).is_file()


def resolve_checkpoint(path: str | Path | None) -> Path | None:
    """A checkpoint file as given, or the one ``find_checkpoint`` picks in a run folder (``None``
    stays ``None``: no checkpoint given)."""
    if path is None:
        return None
    path = Path(path)
    return find_checkpoint(path) if path.is_dir() else path


def resolve_run(path: str | Path, checkpoint: str | Path | None = None) -> tuple[Path, Path | None]:
    """``(config file, checkpoint or None)`` of a config file or a training run folder.

    A run folder gives its ``config.yaml`` and, unless ``checkpoint`` is given, the model
    ``find_checkpoint`` picks (best, else last). ``checkpoint`` itself may be a run folder.
    """
    path = Path(path)
    if path.is_dir():
        if not is_run_dir(path):
            raise InputError(f"a folder without {CONFIG_NAME}: expected a config file or a training run folder",
                             path)
        if checkpoint is None:
            return path / CONFIG_NAME, find_checkpoint(path)
        return path / CONFIG_NAME, resolve_checkpoint(checkpoint)
    return path, resolve_checkpoint(checkpoint)


# --------------------------------------------------------------------------------------------
# Checkpoint retention (training)
# --------------------------------------------------------------------------------------------
def parse_keep_checkpoints(value: Any) -> int | None:
    """``training.keep_checkpoints``: ``"last"`` (default) → ``None`` (only the last and the best
    epoch), ``"all"`` → ``1``, ``N`` / ``"every N"`` → ``N`` (also every N-th epoch)."""
    text = "last" if value is None else str(value).strip().lower()
    if text == "last":
        return None
    if text == "all":
        return 1
    number = text.removeprefix("every").strip()
    if number.isdigit() and int(number) >= 1:
        return int(number)
    raise ConfigError(f"key 'training.keep_checkpoints': expected last, all or a number of epochs N >= 1 "
                      f"(keep every N-th epoch), got {value!r}")


def prune_checkpoints(run_dir: str | Path, every: int | None, from_epoch: int = 0) -> list[Path]:
    """Delete the epoch checkpoints and training states a run no longer needs; return them.

    Kept: the last saved epoch's model and state, the model of the last state's epoch (what
    ``--resume`` reads), ``checkpoint-best.ckpt`` (a separate file), and with ``every = N`` the
    model and state of every N-th epoch. Files of epochs before ``from_epoch`` are left alone (a
    run resumed after epoch E passes E: what an older afsd kept before it is not deleted).
    """
    models, states = epoch_checkpoints(run_dir), epoch_states(run_dir)
    last_state = max(states, default=None)
    keep_models = {max(models, default=None), last_state}
    removed = []
    for files, keep in ((models, keep_models), (states, {last_state})):
        for epoch, path in files.items():
            if epoch in keep or epoch < from_epoch or (every is not None and epoch % every == 0):
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


# --------------------------------------------------------------------------------------------
# What a run folder records
# --------------------------------------------------------------------------------------------
def environment(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``env.json``: the afsd version, interpreter, platform and command line, plus ``extra``
    (torch version, devices, AMP... from the commands that use torch)."""
    import numpy

    report: dict[str, Any] = {
        "afsd": afsd_version(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "cpu_count": os.cpu_count(),
        "cwd": os.getcwd(),
        "argv": list(sys.argv),
    }
    report.update(extra or {})
    return report


def torch_environment(device: Any = None) -> dict[str, Any]:
    """The torch part of ``env.json`` (imports torch: only for the commands that run a network)."""
    import torch

    report: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
        "torch_threads": torch.get_num_threads(),
    }
    if device is not None:
        device = torch.device(device)
        report["device"] = str(device)
        if device.type == "cuda":
            report["gpu"] = torch.cuda.get_device_name(device)
            report["cudnn"] = torch.backends.cudnn.version()
    return report


def write_env(run_dir: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
    from afsd_cli.io import write_json

    return write_json(Path(run_dir) / ENV_NAME, environment(extra))


def write_run_config(run_dir: str | Path, cfg: Config, **testing: Any) -> Path:
    """The resolved config as ``run_dir/config.yaml``, valid as written for the run's outputs.

    ``testing`` sets keys of the ``testing`` section, e.g. ``checkpoint_path=`` the run's model
    or ``output_path=`` the run folder; values that are paths are written absolute.
    """
    import yaml

    from afsd_cli.io import write_text

    tree = cfg.to_dict()
    for key, value in testing.items():
        if key not in tree["testing"]:
            raise ConfigError(f"unknown key 'testing.{key}'")
        tree["testing"][key] = str(Path(value).resolve()) if isinstance(value, Path) else value
    return write_text(Path(run_dir) / CONFIG_NAME, yaml.safe_dump(tree, sort_keys=False))


def training_run_config(run_dir: str | Path, cfg: Config) -> Path:
    """``config.yaml`` of a training run: ``training.checkpoint_path`` is the run folder (where
    this run saves its checkpoints) and ``testing.checkpoint_path`` the model ``find_checkpoint``
    picks, so ``afsd predict RUN/config.yaml`` tests this run's model."""
    import yaml

    from afsd_cli.io import write_text

    run_dir = Path(run_dir)
    tree = cfg.to_dict()
    tree["training"]["checkpoint_path"] = str(run_dir.resolve())
    try:
        tree["testing"]["checkpoint_path"] = str(find_checkpoint(run_dir).resolve())
    except InputError:  # before the first epoch: no model yet rather than another run's
        tree["testing"]["checkpoint_path"] = None
    return write_text(run_dir / CONFIG_NAME, yaml.safe_dump(tree, sort_keys=False))
