"""Custom operators. ``boundary_max_pool`` dispatches to the fastest available backend."""

from afsd_cli.ops.boundary_pooling import BackendInfo, available_backends, boundary_max_pool, use_backend
from afsd_cli.ops.selftest import SelfTestResult, self_test

__all__ = [
    "BackendInfo",
    "SelfTestResult",
    "available_backends",
    "boundary_max_pool",
    "self_test",
    "use_backend",
]
