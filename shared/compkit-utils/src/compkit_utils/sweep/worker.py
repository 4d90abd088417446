"""Run one sweep run in the current process: ``main(argv)`` with output sent to its log.

Used by the local pool's persistent workers and by Ray tasks alike, so both backends run
exactly the same code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RUN_PARENT_ENV = "COMPKIT_RUN_PARENT"
"""Environment variable read by :mod:`compkit_utils.runs`: run directories go right under it."""
LOG_NAME = "stdout.log"

_STARTED = time.time()
_TIMINGS: dict[str, float] = {}


@dataclasses.dataclass(frozen=True)
class RunTask:
    """What a worker needs to run one run.

    Attributes:
        name: the run's name (its directory name).
        module: module holding the command's ``main``.
        argv: the full command line for ``main`` (subcommands, flags, ``--seed`` ...).
        parent: the sweep directory; the run directory is ``parent / name``.
        threads: CPU threads of the run.
    """

    name: str
    module: str
    argv: tuple[str, ...]
    parent: str
    threads: int


@dataclasses.dataclass(frozen=True)
class RunResult:
    """Outcome of one run.

    Attributes:
        name: the run's name.
        returncode: ``main``'s exit status (1 for an exception, 130 when interrupted).
        error: the run's error line, or ``None`` on success.
        seconds: wall time of ``main`` itself.
        host: the machine that ran it.
        worker: timings of the worker process (start, imports), for the benchmark.
    """

    name: str
    returncode: int
    error: str | None
    seconds: float
    host: str
    worker: dict[str, float]


def set_thread_env(threads: int) -> None:
    """Thread-count variables read by torch/OpenMP/BLAS when they are first imported."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


def _exit_with_parent(interval: float = 1.0) -> None:
    """End this worker when the sweep process is gone (killed, not just interrupted).

    A pool worker whose driver was killed with SIGTERM or SIGKILL would otherwise go on
    holding its run (and a core) until the machine stops; a run ended this way keeps its last
    checkpoint, and rerunning the sweep resumes it.
    """
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="compkit-sweep-parent-watch", daemon=True).start()


def init_worker(module: str, threads: int, preload: tuple[str, ...] = ()) -> None:
    """Pool initializer: thread variables, then import the command (and ``preload``) once.

    Args:
        module: the command module.
        threads: CPU threads of every run of this worker.
        preload: heavy modules the command will import (``("torch",)``).
    """
    import importlib

    _exit_with_parent()
    set_thread_env(threads)
    _TIMINGS["module_to_init_s"] = time.time() - _STARTED
    for name in preload:
        begin = time.perf_counter()
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
        _TIMINGS[f"import_{name}_s"] = time.perf_counter() - begin
    begin = time.perf_counter()
    importlib.import_module(module)
    _TIMINGS["import_command_s"] = time.perf_counter() - begin


@contextlib.contextmanager
def _redirect_output(path: Path) -> Iterator[None]:
    """Send file descriptors 1 and 2 (Python and C output alike) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def error_line(log: Path) -> str:
    """The most telling line of a failed run's log: its ``error:`` line, else the last one."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines()]
    except OSError:
        return "no log written"
    lines = [line for line in lines if line]
    for line in reversed(lines):
        if "error:" in line.lower() or "Error" in line:
            return line
    return lines[-1] if lines else "failed without output"


def execute(task: RunTask) -> RunResult:
    """Run ``main(task.argv)`` of ``task.module`` here; its output goes to ``<run>/stdout.log``.

    The output is written to ``<sweep>/logs/<run>.log`` while the run goes (the command
    creates its run directory itself, and removes it when it fails before its first
    checkpoint), then appended to ``<run>/stdout.log`` if the run directory exists; else the
    log stays in ``logs/``. A failure never raises: it becomes a :class:`RunResult` with an
    error line.
    """
    import importlib
    import shutil
    import socket

    parent = Path(task.parent)
    run_dir = parent / task.name
    pending_log = parent / "logs" / f"{task.name}.log"
    pending_log.parent.mkdir(parents=True, exist_ok=True)
    os.environ[RUN_PARENT_ENV] = task.parent
    set_thread_env(task.threads)
    returncode: Any = 1
    begin = time.perf_counter()
    with _redirect_output(pending_log):
        print(f"$ {task.module}.main {' '.join(task.argv)}", flush=True)
        try:
            main = importlib.import_module(task.module).main
            returncode = main(list(task.argv))
        except SystemExit as exc:
            returncode = exc.code if isinstance(exc.code, int) else 1
        except KeyboardInterrupt:
            returncode = 130
        except Exception:  # a crash of one run must not stop the sweep
            traceback.print_exc()
            returncode = 1
        finally:
            os.environ.pop(RUN_PARENT_ENV, None)
    seconds = time.perf_counter() - begin
    returncode = int(returncode or 0)
    error = None if returncode == 0 else error_line(pending_log)
    log = pending_log
    if run_dir.is_dir():
        log = run_dir / LOG_NAME
        with open(pending_log, "rb") as src, open(log, "ab") as dst:
            shutil.copyfileobj(src, dst)
        pending_log.unlink()  # the empty logs/ folder is removed by the sweep at its end:
        # removing it here raced with a run about to open its own log there
    if error is not None:
        error = f"{error} (log: {log})"
    return RunResult(task.name, returncode, error, seconds, socket.gethostname(), dict(_TIMINGS))
