"""The local backend: a pool of persistent worker processes (no extra install).

Each worker imports the command (and torch) once, then runs ``main(argv)`` in-process for
every run it is given, so a run costs no interpreter start and no ``import torch``.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from compkit_utils.sweep.worker import RunResult, RunTask, execute, init_worker


def run_local(
    tasks: Sequence[RunTask],
    *,
    workers: int,
    threads: int,
    module: str,
    preload: tuple[str, ...] = (),
) -> Iterator[RunResult]:
    """Run ``tasks`` on ``workers`` processes; yield each result as it finishes.

    A run that kills its worker process (a segfault, say) is reported as failed; the pool
    is rebuilt and the remaining runs go on (the runs in flight on the broken pool are
    reported failed too; a run not yet handed to it waits for the new pool).

    Args:
        tasks: the runs to do, in order.
        workers: worker processes (at most one run each at a time).
        threads: CPU threads of every run (set before the workers import torch).
        module: the command module the workers import up front.
        preload: heavy modules the workers import up front too (``("torch",)``).
    """
    pending = list(tasks)
    context = multiprocessing.get_context("spawn")
    while pending:
        executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=init_worker,
            initargs=(module, threads, preload),
        )
        in_flight: dict[Future[RunResult], RunTask] = {}
        broken = False
        try:
            while pending or in_flight:
                while pending and len(in_flight) < workers and not broken:
                    try:
                        future = executor.submit(execute, pending[0])
                    except BrokenProcessPool:  # a worker died since the last wait
                        broken = True  # the task stays pending: it runs on the next pool
                        break
                    in_flight[future] = pending.pop(0)
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    task = in_flight.pop(future)
                    try:
                        yield future.result()
                    except BrokenProcessPool:
                        broken = True
                        yield RunResult(task.name, 1, "the worker process died", 0.0, "", {})
                if broken and not in_flight:
                    break
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
