"""Custom operators and native kernels, each module beside its sources under ``csrc/``.

* :mod:`~afsd_cli.ops.boundary_pooling`: ``boundary_max_pool`` (compiled C++/CUDA or PyTorch);
* :mod:`~afsd_cli.ops.soft_nms`: the official soft-NMS (C loop via ctypes, NumPy, PyTorch);
* :mod:`~afsd_cli.ops.bicubic_resize`: Pillow-exact bicubic resize (C kernel via ctypes, Pillow);
* :mod:`~afsd_cli.ops.native` builds the plain-C kernels, :mod:`~afsd_cli.ops.extension` the torch
  op; :func:`~afsd_cli.ops.backends.choose_backend` reads the ``$AFSD_*_BACKEND`` variables.

Importing this package does not import torch (``prepare`` and its workers use the resize): the
names below load their module on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY_EXPORTS = {
    "BackendInfo": "boundary_pooling",
    "available_backends": "boundary_pooling",
    "boundary_max_pool": "boundary_pooling",
    "use_backend": "boundary_pooling",
    "SelfTestResult": "selftest",
    "self_test": "selftest",
}

__all__ = sorted(_LAZY_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _LAZY_EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY_EXPORTS[name]}"), name)
