"""The Ray backend (extra ``compkit-utils[ray]``): one Ray task per run.

Every run is the same :func:`compkit_utils.sweep.worker.execute` call as on the local
pool, so the per-run metrics are identical. Ray reuses its worker processes, so the
command and torch are imported once per worker, as locally.

Across machines the runs directory must be on a shared filesystem mounted at the same path
on every node: each task writes its run directory there directly, and checks first that it
can see the sweep directory (a node without the mount fails its runs with a clear message
instead of writing results nobody collects).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from compkit_utils.errors import UserError, install_hint
from compkit_utils.sweep.worker import RunResult, RunTask, execute

PROBE_TIMEOUT_S = 3.0


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise UserError(
            "--backend ray needs the ray extra: " + install_hint("compkit-utils", "ray")
        ) from exc
    return ray


def _probe(address: str) -> None:
    """Fail fast (seconds, not minutes) when nothing listens at a ``host:port`` address."""
    target = address.removeprefix("ray://")
    host, sep, port_text = target.rpartition(":")
    if not sep or not port_text.isdigit():
        raise UserError(f"--address {address!r}: expected auto, host:port or ray://host:port")
    try:
        with socket.create_connection((host, int(port_text)), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(
            f"--address {address}: no Ray cluster answers there ({reason}); start one with "
            "`ray start --head` or fix the address"
        ) from exc


def connect(address: str | None, num_cpus: int) -> tuple[Any, bool]:
    """Start a local Ray instance (``address=None``) or join a running cluster.

    Returns:
        The ``ray`` module and whether this call initialised it (then the caller shuts
        it down); an already initialised Ray is used as it is.

    Raises:
        UserError: ray is missing, or the address cannot be reached (within seconds).
    """
    ray = _ray()
    if ray.is_initialized():
        return ray, False
    if address is None:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        return ray, True
    if address != "auto":
        _probe(address)
    try:
        ray.init(address=address, log_to_driver=False)
    except ConnectionError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--address {address}: {first}") from exc
    except ImportError as exc:  # ray:// needs the client extra of ray
        raise UserError(
            f"--address {address}: Ray client mode needs pip install 'ray[client]' ({exc})"
        ) from exc
    return ray, True


def _execute_checked(task: RunTask, marker: str) -> RunResult:
    if not (Path(task.parent) / marker).exists():
        host = socket.gethostname()
        return RunResult(
            task.name,
            1,
            f"{host} cannot see {task.parent}; put the runs directory on a filesystem shared "
            "by all nodes, mounted at the same path",
            0.0,
            host,
            {},
        )
    return execute(task)


def run_ray(
    tasks: Sequence[RunTask],
    *,
    threads: int,
    marker: str,
) -> Iterator[RunResult]:
    """Run ``tasks`` as Ray tasks of ``threads`` CPUs each; yield results as they finish.

    Ray must be connected (:func:`connect`).

    Args:
        tasks: the runs to do.
        threads: CPUs reserved per run (and its thread count).
        marker: a file name in the sweep directory that every task must see.
    """
    ray = _ray()
    remote = ray.remote(num_cpus=threads, max_retries=0)(_execute_checked)
    refs = {remote.remote(task, marker): task for task in tasks}
    try:
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                task = refs.pop(ref)
                try:
                    yield ray.get(ref)
                except Exception as exc:  # the worker died or the task could not run
                    line = str(exc).strip().splitlines()
                    yield RunResult(task.name, 1, line[0] if line else repr(exc), 0.0, "", {})
    finally:
        for ref in refs:
            ray.cancel(ref, force=True)
