"""Custom operators. ``boundary_max_pool`` dispatches to the fastest available backend."""

from afsd_cli.ops.boundary_pooling import boundary_max_pool

__all__ = ["boundary_max_pool"]
