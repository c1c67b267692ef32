"""Run one function over many items in parallel with joblib; one bad item never stops the batch.

Each item is a :class:`Task` (a name and the arguments of a module-level function). Every call
is wrapped so that an exception becomes a ``failed`` :class:`TaskResult` carrying a one-line
reason; the others go on. Results reach an optional callback as they finish (for progress bars
and incremental manifests) and come back in item order at the end.

Backends: ``"loky"`` (joblib's process pool, the default on one machine), ``"threading"``,
``"sequential"``, or any backend registered with joblib, e.g. ``"dask"`` (joblib ships it; it
uses the ``dask.distributed`` client of the process, or the scheduler named by
``DASK_SCHEDULER_ADDRESS``) and ``"ray"`` (registered here through
``ray.util.joblib.register_ray`` when ray is installed; ``RAY_ADDRESS`` picks the cluster).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from afsd_cli.errors import AFSDError, ConfigError

DONE, SKIPPED, FAILED = "done", "skipped", "failed"


@dataclass
class Task:
    name: str
    func: Callable[..., dict]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass
class TaskResult:
    name: str
    status: str  # DONE | SKIPPED | FAILED
    seconds: float = 0.0
    frames: int = 0  # work done, for frames/s (decoded native frames, flow frames, ...)
    error: str | None = None
    info: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status != FAILED


def describe_error(exc: BaseException) -> str:
    """One line naming the problem (library errors as they are, others with their type)."""
    if isinstance(exc, AFSDError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_task(task: Task) -> TaskResult:
    """Call one task, turning any exception into a failed result (runs inside the workers)."""
    start = time.perf_counter()
    try:
        info = task.func(*task.args, **task.kwargs) or {}
    except Exception as exc:  # noqa: BLE001 - a batch reports every failure and goes on
        return TaskResult(task.name, FAILED, time.perf_counter() - start, error=describe_error(exc))
    frames = int(info.pop("work_frames", info.get("frames", 0)) or 0)
    return TaskResult(task.name, DONE, time.perf_counter() - start, frames=frames, info=info)


def resolve_jobs(jobs: int | None) -> int:
    """``None``/0 → every core; negative values count back from the core count like joblib."""
    cores = os.cpu_count() or 1
    if not jobs:
        return cores
    if jobs < 0:
        return max(1, cores + 1 + jobs)
    return jobs


LOCAL_BACKENDS = ("loky", "threading", "multiprocessing", "sequential")
_CLIENTS: list = []  # a dask client made here lives as long as the process


def check_backend(backend: str) -> None:
    """Make sure joblib can use ``backend`` (registering ray's); raise ConfigError otherwise."""
    if backend in LOCAL_BACKENDS:
        return
    if backend == "ray":
        try:
            from ray.util.joblib import register_ray
        except ImportError as exc:
            raise ConfigError("--backend ray needs the `ray` package (pip install 'ray[default]')") from exc
        register_ray()
    elif backend == "dask":
        try:
            import distributed
        except ImportError as exc:
            raise ConfigError("--backend dask needs `dask[distributed]` (pip install 'dask[distributed]')") from exc
        try:
            distributed.get_client()
        except ValueError:
            # joblib's dask backend needs a client: Client() connects to the scheduler named by
            # DASK_SCHEDULER_ADDRESS (dask config `scheduler-address`), else starts a local cluster.
            _CLIENTS.append(distributed.Client())
    from joblib.parallel import BACKENDS, EXTERNAL_BACKENDS  # dask is registered lazily by joblib

    if backend not in BACKENDS and backend not in EXTERNAL_BACKENDS:
        known = sorted(set(BACKENDS) | set(EXTERNAL_BACKENDS))
        raise ConfigError(f"unknown joblib backend {backend!r}; known: {', '.join(known)}")


def run_batch(
    tasks: Sequence[Task],
    *,
    jobs: int | None = None,
    backend: str = "loky",
    on_result: Callable[[TaskResult], Any] | None = None,
) -> list[TaskResult]:
    """Run every task; return their results in task order. Never raises for a failing task."""
    if not tasks:
        return []
    n_jobs = resolve_jobs(jobs)
    results: dict[str, TaskResult] = {}

    def collect(result: TaskResult) -> None:
        results[result.name] = result
        if on_result is not None:
            on_result(result)

    if backend == "sequential" or (backend == "loky" and (n_jobs == 1 or len(tasks) == 1)):
        # In-process: no pool start-up cost, and tracebacks stay simple to debug.
        for task in tasks:
            collect(run_task(task))
    else:
        check_backend(backend)
        from joblib import Parallel, delayed, parallel_config

        n_jobs = min(n_jobs, len(tasks)) if backend in ("loky", "threading", "multiprocessing") else n_jobs
        with parallel_config(backend=backend, n_jobs=n_jobs):
            try:
                runner = Parallel(return_as="generator_unordered", batch_size=1, pre_dispatch="2*n_jobs")
            except ValueError:  # joblib < 1.4: results in submission order
                runner = Parallel(return_as="generator", batch_size=1, pre_dispatch="2*n_jobs")
            for result in runner(delayed(run_task)(task) for task in tasks):
                collect(result)
    return [results[task.name] for task in tasks]
