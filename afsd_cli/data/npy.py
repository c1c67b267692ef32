"""The one reader of ``.npy`` arrays (frames, flow): memory-mapped, refusing degenerate files.

``np.load`` answers a zero-byte file with a bare ``EOFError``, a text file with advice to load
it with ``allow_pickle``, and a truncated one with "mmap length is greater than file size".
Here the header is checked first, so each case is an InputError naming the file and saying
what is wrong with it; the data itself is only mapped, never read.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from afsd_cli.errors import InputError

_MAGIC = b"\x93NUMPY"


def open_npy(path: str | Path) -> np.ndarray:
    """The array stored in ``path``, memory-mapped read-only; InputError for a degenerate file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("array file not found" if not path.exists() else "not a file", path)
    data_offset, shape, dtype = _read_header(path)
    expected = data_offset + math.prod(shape) * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise InputError(f"truncated .npy file: its header announces {list(shape)} {dtype} "
                         f"({expected} bytes) but the file has {actual} bytes", path)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot map the array ({type(exc).__name__})", path) from None


def open_or_problem(path: Path) -> tuple[np.ndarray | None, str | None]:
    """``(array, None)``, or ``(None, why not)`` with a phrase starting with the file's name (for
    the lists of bad arrays that ``afsd train`` shows before it starts)."""
    if not path.is_file():
        return None, f"{path.name} not found"
    try:
        return open_npy(path), None
    except InputError as exc:
        return None, f"{path.name} unreadable ({exc.message})"


def _read_header(path: Path) -> tuple[int, tuple[int, ...], np.dtype]:
    """``(offset of the data, shape, dtype)`` from the ``.npy`` header (numpy.lib.format)."""
    try:
        with path.open("rb") as stream:
            head = stream.read(len(_MAGIC))
            if not head:
                raise InputError("empty file (0 bytes): not a .npy array", path)
            if head != _MAGIC:
                raise InputError("not a .npy file (it does not start with the NumPy header)", path)
            stream.seek(0)
            version = np.lib.format.read_magic(stream)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)  # 2.0 and 3.0 share the layout
            shape, _, dtype = read_header(stream)
            offset = stream.tell()
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror or type(exc).__name__})", path) from None
    except ValueError:
        raise InputError("truncated or corrupt .npy header", path) from None
    if dtype.hasobject:
        raise InputError("the array holds Python objects; only plain numeric arrays are read "
                         "(loading objects could run code)", path)
    return offset, tuple(int(n) for n in shape), dtype


def open_frames(path: str | Path, channels: int, crop_size: int | None = None) -> np.ndarray:
    """A memory-mapped ``uint8 [T>0, H, W, channels]`` frame array (RGB: 3, flow: 2)."""
    array = open_npy(path)
    check_frames(array, channels, crop_size, path)
    return array


def check_frames(array: np.ndarray, channels: int, crop_size: int | None, path: str | Path | None) -> None:
    """Raise InputError unless ``array`` is ``uint8 [T>0, H, W, channels]`` with H, W >= crop_size."""
    kind = "RGB" if channels == 3 else "flow" if channels == 2 else f"{channels}-channel"
    if not isinstance(array, np.ndarray):
        raise InputError(f"expected a numpy array, got {type(array).__name__}", path)
    if array.dtype != np.uint8:
        raise InputError(f"expected uint8 {kind} frames, got dtype {array.dtype}", path)
    if array.ndim != 4 or array.shape[-1] != channels:
        raise InputError(f"expected {kind} frames [T, H, W, {channels}], got shape {list(array.shape)}", path)
    if array.shape[0] == 0:
        raise InputError("the array has no frames", path)
    if crop_size is not None and min(array.shape[1:3]) < crop_size:
        raise InputError(f"frames of {array.shape[1]}x{array.shape[2]} px are smaller than the "
                         f"{crop_size} px crop", path)


#: Problems named in one message about a folder of arrays; the rest are counted.
MAX_LISTED_PROBLEMS = 10


def array_problems_error(problems: list[str], what: str, where: str | Path | None) -> InputError:
    """One error for every unusable array of a folder: ``N <what> array(s) missing or malformed:``
    the first ten problems, then how many more."""
    shown = "; ".join(problems[:MAX_LISTED_PROBLEMS])
    more = len(problems) - MAX_LISTED_PROBLEMS
    return InputError(f"{len(problems)} {what} array(s) missing or malformed: {shown}"
                      + (f"; and {more} more" if more > 0 else ""), where)
