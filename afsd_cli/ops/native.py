"""Finds the C sources under ``csrc/`` and builds plain-C helper libraries for ``ctypes``.

Two kinds of compiled code live in ``csrc/``: the boundary-max-pooling op (C++/CUDA against
torch, built by :mod:`afsd_cli.ops.extension`) and small dependency-free C kernels, the
Pillow-exact resize and the soft-NMS loop (built here with the system C compiler, no torch
import, in about a second). Built libraries are cached on disk under a name that hashes the source, the compiler
and its flags, so later processes (and every joblib worker) just load them. Writes are atomic:
concurrent builders each compile to a temporary name and rename.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

SOURCES_ENV = "AFSD_CSRC_DIR"
CACHE_ENV = "AFSD_CACHE_DIR"
# -ffp-contract=off: float code must round like the NumPy/PyTorch reference (no fused multiply-add)
CFLAGS = ("-O3", "-ffp-contract=off", "-shared", "-fPIC")


class NativeBuildError(RuntimeError):
    """A helper library could not be compiled or loaded (the reason is the message)."""


def csrc_roots() -> list[Path]:
    """Where ``csrc/`` may be, in order: ``$AFSD_CSRC_DIR``, the checkout's ``csrc/`` (editable
    install), ``afsd_cli/csrc/``, ``<prefix>/share/afsd/csrc`` (wheels install it as data files)."""
    package = Path(__file__).resolve().parents[1]  # afsd_cli/ (this file is afsd_cli/ops/native.py)
    roots = [Path(os.environ[SOURCES_ENV])] if os.environ.get(SOURCES_ENV) else []
    return roots + [package.parent / "csrc", package / "csrc", Path(sys.prefix) / "share" / "afsd" / "csrc"]


def find_source(relative: str) -> Path | None:
    """The first ``<root>/<relative>`` that exists, or None."""
    for root in csrc_roots():
        candidate = root / relative
        if candidate.is_file():
            return candidate
    return None


def cache_root() -> Path:
    """``$AFSD_CACHE_DIR``, else ``$XDG_CACHE_HOME/afsd`` or ``~/.cache/afsd``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "afsd"


def c_compiler() -> list[str] | None:
    """``$CC`` when set (and nothing else), else the compiler Python was built with, else
    ``cc``/``gcc``/``clang`` on PATH; None when none is found."""
    configured = os.environ.get("CC")
    candidates = [configured] if configured else [sysconfig.get_config_var("CC"), "cc", "gcc", "clang"]
    for candidate in candidates:
        command = shlex.split(candidate or "")
        if command and shutil.which(command[0]):
            return command
    return None


def _private(folder: Path) -> bool:
    """Owned by this user and writable by nobody else (a shared /tmp must not supply libraries)."""
    info = folder.stat()
    return info.st_uid == os.getuid() and not info.st_mode & 0o022


def build_library(relative_source: str, name: str) -> Path:
    """Compile ``csrc/<relative_source>`` into a cached shared library; return its path.

    Raises :class:`NativeBuildError` with a one-line reason (no sources, no compiler, compile
    error) so the caller can fall back to a pure-Python path.
    """
    if os.name == "nt":
        raise NativeBuildError("native helpers are not built on Windows")
    source, compiler = _source_and_compiler(relative_source)
    filename = _library_name(name, source, compiler)
    folders = _build_folders()
    cached = _cached_library(folders, filename)
    if cached is not None:
        return cached
    folder, temporary = _claim_build_file(folders, filename)
    return _compile(compiler, source, temporary, folder / filename)


def _source_and_compiler(relative_source: str) -> tuple[Path, list[str]]:
    source = find_source(relative_source)
    if source is None:
        raise NativeBuildError(f"C source csrc/{relative_source} not found")
    compiler = c_compiler()
    if compiler is None:
        configured = os.environ.get("CC")
        raise NativeBuildError(f"C compiler $CC={configured!r} not found" if configured
                               else "no C compiler found (set CC)")
    return source, compiler


def _library_name(name: str, source: Path, compiler: list[str]) -> str:
    """The file name carries a hash of what the binary depends on: a changed source, compiler or
    flag builds a new one instead of loading a stale library."""
    key = hashlib.sha256()
    key.update(source.read_bytes())
    key.update(repr((compiler, CFLAGS, platform.machine(), sys.platform)).encode())
    return f"lib{name}-{key.hexdigest()[:16]}.so"


def _build_folders() -> list[Path]:
    # The user cache, or (read-only home, e.g. in a container) a private folder under /tmp.
    return [cache_root() / "native", Path(tempfile.gettempdir()) / f"afsd-native-{os.getuid()}"]


def _cached_library(folders: list[Path], filename: str) -> Path | None:
    private = folders[-1]
    for folder in folders:
        # a library in the shared /tmp is loaded only from a folder no other user can write
        if (folder / filename).is_file() and (folder != private or _private(folder)):
            return folder / filename
    return None


def _claim_build_file(folders: list[Path], filename: str) -> tuple[Path, str]:
    """The first folder where a temporary output file can be made: (folder, temporary path)."""
    private = folders[-1]
    problems = []
    for folder in folders:
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if folder == private and not _private(folder):
                raise OSError(f"{folder} is not a private folder of this user")
            handle, temporary = tempfile.mkstemp(prefix=f".{filename}.", dir=folder)
            os.close(handle)
            return folder, temporary
        except OSError as exc:
            problems.append(f"{folder}: {exc.strerror}" if exc.strerror else str(exc))
    raise NativeBuildError(f"no writable build folder ({'; '.join(problems)})")


def _compile(compiler: list[str], source: Path, temporary: str, target: Path) -> Path:
    """Compile into ``temporary``, then rename it to ``target`` (a concurrent build never loads a
    half-written library); the temporary file is removed whatever happens."""
    try:
        result = subprocess.run([*compiler, *CFLAGS, "-o", temporary, str(source)], capture_output=True,
                                text=True, timeout=120)
        if result.returncode != 0:
            output = result.stderr.splitlines()
            lines = [line for line in output if "error:" in line.lower()] or output
            raise NativeBuildError(f"{compiler[0]} failed on {source.name}: {(lines or ['no output'])[0][:300]}")
        os.replace(temporary, target)
    except (OSError, subprocess.SubprocessError) as exc:
        raise NativeBuildError(f"{compiler[0]} could not run: {exc}") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target


def load_library(relative_source: str, name: str) -> ctypes.CDLL:
    """:func:`build_library` then ``ctypes.CDLL``; raises :class:`NativeBuildError`."""
    path = build_library(relative_source, name)
    try:
        return ctypes.CDLL(str(path))
    except OSError as exc:
        raise NativeBuildError(f"cannot load {path}: {exc}") from None


@functools.lru_cache(maxsize=None)
def try_load_library(relative_source: str, name: str) -> tuple[ctypes.CDLL | None, str | None]:
    """:func:`load_library` once per process: ``(library, None)`` or ``(None, why not)``."""
    try:
        return load_library(relative_source, name), None
    except NativeBuildError as exc:
        return None, str(exc)
