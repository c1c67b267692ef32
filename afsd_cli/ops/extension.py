"""Builds and loads the compiled boundary-max-pooling op (``torch.ops.afsd_bmp``) on first use.

The C++ (and, with a CUDA torch and a working CUDA toolkit, CUDA) sources under ``csrc/`` are
compiled with ``torch.utils.cpp_extension.load`` into ``$TORCH_EXTENSIONS_DIR`` (default
``~/.cache/afsd/torch_extensions``); later processes reload the cached library in milliseconds.
Nothing is compiled at import time. Every failure is recorded (see :func:`extension_status`)
instead of raised, so callers can fall back to the pure-PyTorch implementation.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

EXTENSIONS_DIR_ENV = "TORCH_EXTENSIONS_DIR"
_SOURCE_SUBDIR = "boundary_max_pooling"
_DISPATCHER = "boundary_max_pooling.cpp"
_CPU_SOURCE = "boundary_max_pooling_cpu.cpp"
_CUDA_SOURCE = "boundary_max_pooling_cuda.cu"


@dataclass
class ExtensionState:
    """Outcome of the (single) build attempt of this process."""

    attempted: bool = False
    library: str | None = None  # path of the loaded shared library
    cpu: bool = False  # CPU kernels registered
    cuda: bool = False  # CUDA kernels registered
    build_seconds: float | None = None
    errors: dict[str, str] = field(default_factory=dict)  # "cpp"/"cuda" -> why it is unavailable


_state = ExtensionState()
_lock = threading.Lock()


def source_dir() -> Path | None:
    """The folder holding the op's sources (see :func:`afsd_cli.ops.native.csrc_roots` for where
    ``csrc/`` is looked for); None when absent."""
    from afsd_cli.ops.native import csrc_roots

    for base in csrc_roots():
        folder = base / _SOURCE_SUBDIR
        if (folder / _DISPATCHER).is_file() and (folder / _CPU_SOURCE).is_file():
            return folder
    return None


def extensions_root() -> Path:
    """``$TORCH_EXTENSIONS_DIR`` if set, else the user cache (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    configured = os.environ.get(EXTENSIONS_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "afsd" / "torch_extensions"


def _build_folder(name: str) -> Path:
    import torch

    # Libraries are ABI-tied to the Python and torch that built them: one folder per combination.
    tag = f"py{sys.version_info.major}{sys.version_info.minor}_torch{torch.__version__}".replace("+", "_")
    folder = extensions_root() / tag / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _short(exc: BaseException) -> str:
    """First meaningful line of an exception (build logs can be pages long)."""
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return f"{type(exc).__name__}: {(errors or lines)[0][:300]}"


def _cuda_unavailable_reason() -> str | None:
    import torch

    if torch.version.cuda is None:
        return "torch was built without CUDA"
    if not torch.cuda.is_available():
        return "no CUDA device"
    from torch.utils import cpp_extension

    if cpp_extension.CUDA_HOME is None:
        return "CUDA toolkit not found (set CUDA_HOME)"
    return None


def _compile(name: str, sources: list[Path], with_cuda: bool) -> str:
    from torch.utils import cpp_extension

    cflags = ["-O3"] if os.name != "nt" else ["/O2"]
    if sys.platform.startswith("linux"):
        cflags.append("-fopenmp")  # at::parallel_for is OpenMP code inlined from the headers
    cuda_cflags: list[str] = []
    if with_cuda:
        cflags.append("-DAFSD_BMP_WITH_CUDA")
        cuda_cflags = ["-O3", "-DAFSD_BMP_WITH_CUDA"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # compiler-version chatter; failures raise
        cpp_extension.load(
            name=name,
            sources=[str(path) for path in sources],
            extra_cflags=cflags,
            extra_cuda_cflags=cuda_cflags,
            extra_include_paths=[str(sources[0].parent)],
            build_directory=str(_build_folder(name)),
            with_cuda=with_cuda,
            is_python_module=False,
            verbose=False,
        )
    return str(_build_folder(name) / f"{name}.so")


def load_extension() -> ExtensionState:
    """Build (or reload from the cache) the compiled op once per process; never raises."""
    with _lock:
        if _state.attempted:
            return _state
        _state.attempted = True
        import time

        started = time.perf_counter()
        folder = source_dir()
        if folder is None:
            _state.errors["cpp"] = "C++ sources (csrc/boundary_max_pooling) not found"
            _state.errors["cuda"] = _state.errors["cpp"]
            return _state
        base = [folder / _DISPATCHER, folder / _CPU_SOURCE]
        try:
            cuda_reason = _cuda_unavailable_reason()
        except Exception as exc:  # noqa: BLE001 - a broken toolkit probe must not break the op
            cuda_reason = _short(exc)
        if cuda_reason is None:
            try:
                _state.library = _compile("afsd_bmp_cuda", [*base, folder / _CUDA_SOURCE], with_cuda=True)
                _state.cpu = _state.cuda = True
            except Exception as exc:  # noqa: BLE001 - OSError (CUDA_HOME), RuntimeError (build), ImportError
                cuda_reason = _short(exc)
        if cuda_reason is not None:
            _state.errors["cuda"] = cuda_reason
        if not _state.cpu:
            try:
                _state.library = _compile("afsd_bmp_cpu", base, with_cuda=False)
                _state.cpu = True
            except Exception as exc:  # noqa: BLE001
                _state.errors["cpp"] = _short(exc)
        _state.build_seconds = time.perf_counter() - started
        return _state


def extension_state() -> ExtensionState:
    """The current state without triggering a build."""
    return _state


def compiled_ops():
    """``torch.ops.afsd_bmp`` after loading; raises RuntimeError when the build failed."""
    state = load_extension()
    if not state.cpu:
        raise RuntimeError(f"compiled boundary_max_pool unavailable: {state.errors.get('cpp', 'unknown')}")
    import torch

    return torch.ops.afsd_bmp
