"""What ``afsd checks`` reports, as ``(name, value)`` rows: versions, devices and the backends of
the native helpers. The boundary-max-pool backends and their self-test are ``afsd_cli.ops``'
(``available_backends``, ``self_test``); :func:`disagreeing_backends` names the ones that fail it.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Callable, Iterable

Row = tuple[str, str]


def version_rows() -> list[Row]:
    """afsd, Python, torch (and the CUDA/cuDNN it was built with), NumPy, OpenCV, Pillow, platform."""
    import numpy
    import torch

    from afsd_cli import __version__

    rows = [
        ("afsd", __version__),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("torch", torch.__version__),
        ("CUDA (torch build)", torch.version.cuda or "none (CPU build)"),
    ]
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    rows.append(("cuDNN", str(cudnn) if cudnn else "not available"))
    rows.append(("numpy", numpy.__version__))
    rows.append(("opencv", _module_version("cv2")))
    rows.append(("pillow", _module_version("PIL")))
    rows.append(("platform", platform.platform()))
    return rows


def _module_version(module: str) -> str:
    """An optional dependency's version, or why it does not import."""
    import importlib

    try:
        return importlib.import_module(module).__version__
    except ImportError as exc:
        return f"not importable ({exc})"


def device_rows() -> list[Row]:
    """The CPU (cores, torch threads) and every visible CUDA device."""
    import torch

    rows = [("cpu", f"{os.cpu_count()} logical cores, torch uses {torch.get_num_threads()} threads")]
    if not torch.cuda.is_available():
        return rows + [("cuda", "no CUDA device visible")]
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        rows.append((f"cuda:{index}", f"{props.name}, compute {props.major}.{props.minor}, "
                     f"{props.total_memory / 2**30:.1f} GiB"))
    return rows


def native_helper_rows() -> list[tuple[str, str, str]]:
    """``(what, backend, detail)`` of the plain-C helpers (compiled on first use, so this may
    take a second); a misconfigured backend is reported in its row, not raised."""
    from afsd_cli.ops.soft_nms import soft_nms_backend

    return [("frame resize (pil-bicubic)", *_backend_row(_resize_backend)),
            ("soft-NMS", *_backend_row(soft_nms_backend))]


def _resize_backend() -> Row:
    from afsd_cli.ops.bicubic_resize import active_backend, pillow_pass_rule

    backend, detail = active_backend()
    order = "vertical pass first for tall shrinks" if pillow_pass_rule() else "horizontal pass first"
    return backend, f"{detail}; installed Pillow: {order}"


def _backend_row(describe: Callable[[], Row]) -> Row:
    try:
        return describe()
    except Exception as exc:  # noqa: BLE001 - a misconfigured backend is reported, not fatal here
        return "error", str(exc)


def disagreeing_backends(results: Iterable) -> list[str]:
    """``backend (device)`` of every self-test result (``ops.self_test``) that failed or broke."""
    return [f"{r.backend} ({r.device})" for r in results if r.status in ("fail", "error")]
