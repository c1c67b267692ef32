"""Atomic file output: every file the project writes goes through these helpers.

A file is written to a temporary name in the same folder and renamed over the target, so a
crash or a kill never leaves a half-written file behind. The temporary name,
``.NAME.PID@HOST.RANDOM.tmp``, says which process wrote it: a SIGKILL cannot be caught, so the
first write of a process into a folder removes the temporary files there whose writer (same host,
that pid) no longer runs. Write failures (read-only folder, full disk, a folder where a file is
expected) raise ``OutputError`` naming the path and the system's reason; ``ensure_writable``
checks an output path before the expensive work.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import tempfile
import time
import zlib
from pathlib import Path
from typing import IO, Any, Iterator

TEMP_SUFFIX = ".tmp"
# .NAME.PID@HOST.RANDOM.tmp (HOST: 8 hex digits of a hash of the host name; RANDOM: mkstemp's)
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)@(?P<host>[0-9a-f]{8})\.[A-Za-z0-9_]+\.tmp$")
# .NAME.RANDOM.tmp: the names of earlier versions (mkstemp's 8 characters, no writer recorded)
_LEGACY_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")
_swept_folders: set[tuple[int, str]] = set()  # (pid, folder): folders this process already swept
_STARTED = time.time()  # when this process imported the writers: older idle temp files are not ours


def _host_tag() -> str:
    return f"{zlib.crc32(socket.gethostname().encode()):08x}"


def _pid_is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    except OSError:
        return True  # cannot tell: keep the file
    return True


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Remove the atomic writers' temporary files in ``folder`` whose writing process is gone.

    Only names of the form ``.NAME.PID@HOST.RANDOM.tmp`` written on this host are considered, so
    a file another machine is writing into a shared folder is never touched. The names of earlier
    versions, ``.NAME.RANDOM.tmp``, do not say who wrote them: they are removed when they were
    last modified well before this process started (a live writer keeps its file's time recent).
    Returns what was removed.
    """
    folder = Path(folder)
    host, removed = _host_tag(), []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not _is_stale(entry, host):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _is_stale(entry: os.DirEntry, host: str) -> bool:
    match = _TEMP_NAME.match(entry.name)
    if match:
        pid = int(match["pid"])
        return match["host"] == host and pid != os.getpid() and not _pid_is_running(pid)
    if _LEGACY_TEMP_NAME.match(entry.name):
        with contextlib.suppress(OSError):
            return entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < _STARTED - 60
    return False


def _sweep_once(folder: Path) -> None:
    # once per process and folder: a folder of 10 000 arrays is listed once, not at every write
    key = (os.getpid(), os.path.abspath(folder))
    if key not in _swept_folders:
        _swept_folders.add(key)
        remove_stale_temp_files(folder)


def output_error(exc: OSError, path: str | Path, what: str = "cannot write") -> Exception:
    """The OutputError for an OSError met while writing ``path`` (names the system's reason)."""
    from afsd_cli.errors import OutputError

    reason = exc.strerror or str(exc)
    if exc.errno == errno.EISDIR:
        reason = "is a folder, expected a file"
    elif exc.errno == errno.ENOTDIR or isinstance(exc, FileExistsError):  # mkdir met a file on the way
        reason = "a parent of it is a file, not a folder"
    return OutputError(f"{what}: {reason}", path)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it to ``path``.

    On any failure, Ctrl-C included, the temporary file is removed and the previous ``path`` (if
    any) is left as it was; an OSError becomes an OutputError naming ``path``.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        _sweep_once(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}@{_host_tag()}.", suffix=TEMP_SUFFIX,
                                   dir=path.parent)
    except OSError as exc:
        raise output_error(exc, path) from None
    try:
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise output_error(exc, path) from None
        raise


def ensure_writable(path: str | Path, kind: str = "file") -> Path:
    """Check, before any expensive work, that ``path`` can be written; raise OutputError if not.

    ``kind="file"``: ``path`` must not be a folder; ``kind="folder"``: it must not be a file.
    Nothing is created: the nearest existing folder on the way (``path`` itself for an existing
    folder) must be a folder where this process can really create a file (a temporary probe of
    one block, removed again), which also catches read-only mounts, a full disk and root-only
    permissions that ``os.access`` misjudges.
    """
    from afsd_cli.errors import OutputError

    if kind not in ("file", "folder"):
        raise ValueError(f"kind must be 'file' or 'folder', not {kind!r}")
    path = Path(path)
    if kind == "file" and path.is_dir():
        raise OutputError("is a folder, expected a file path", path)
    if kind == "folder" and path.exists() and not path.is_dir():
        raise OutputError("is a file, expected a folder", path)
    folder = path if kind == "folder" else path.parent
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"cannot create the output {kind} {path}: this is a file, not a folder", folder)
    _probe_write(folder)
    return path


def make_output_folder(path: str | Path) -> Path:
    """Create the output folder of a batch job, first checking (``ensure_writable``) that it can
    hold files: a read-only, full or file path is refused before any input is decoded."""
    path = Path(path)
    ensure_writable(path, kind="folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, path, "cannot create the output folder") from None
    return path


def _probe_write(folder: Path) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=f".afsd-probe.{os.getpid()}@{_host_tag()}.", suffix=TEMP_SUFFIX,
                                     dir=folder)
    except OSError as exc:
        raise output_error(exc, folder, "cannot write into this folder") from None
    try:
        os.write(fd, b"\0" * 4096)
        os.fsync(fd)
    except OSError as exc:
        raise output_error(exc, folder, "cannot write into this folder") from None
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(probe)


def read_text(path: str | Path, what: str = "file") -> str:
    """A text file's content; a missing or unreadable file raises InputError naming it."""
    from afsd_cli.errors import InputError

    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{what} not found", path) from None
    except IsADirectoryError:
        raise InputError(f"is a directory, expected a {what}", path) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} is not UTF-8 text (byte {exc.start})", path) from None
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror}", path) from None


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """A JSON file's content; missing, empty or malformed files raise InputError with the place."""
    from afsd_cli.errors import InputError

    text = read_text(path, what)
    if not text.strip():
        raise InputError(f"{what} is empty", path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", path) from None
    except RecursionError:
        raise InputError("malformed JSON: nested too deeply", path) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return Path(path)


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=indent)
        handle.write("\n")
    return Path(path)


def write_npy(path: str | Path, array: Any) -> Path:
    import numpy as np

    with atomic_open(path, "wb") as handle:
        np.save(handle, np.asarray(array), allow_pickle=False)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def save_torch(path: str | Path, obj: Any) -> Path:
    """``torch.save`` through a temporary file (checkpoints, training state)."""
    import torch

    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)
    return Path(path)


def save_figure(path: str | Path, figure: Any, **kwargs: Any) -> Path:
    """Save a matplotlib figure atomically as PNG."""
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", **kwargs)
    return Path(path)
