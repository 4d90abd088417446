"""``compkit sweep``: expand a grid over seeds, run it on a backend, keep ``sweep.json``."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from compkit_utils.errors import UserError
from compkit_utils.runs import git_commit, resolve_runs_dir
from compkit_utils.sweep import manifest as mf
from compkit_utils.sweep.commands import CommandSpec, preload_modules, resolve_command
from compkit_utils.sweep.grid import RunSpec, check_extra_args, expand, parse_grid, parse_seeds
from compkit_utils.sweep.worker import RunResult, RunTask


@dataclasses.dataclass(frozen=True)
class SweepOptions:
    """Everything ``compkit sweep`` was asked to do.

    Attributes:
        package: package name or ``module:attr`` of a command tree.
        command: the subcommand path (``["train"]``).
        seeds: seeds text (``0-9``).
        grid: ``key=v1,v2`` items.
        args: fixed arguments passed to every run (``--iterations 200``).
        name: sweep name (default: the command path joined with ``-``).
        runs_dir: runs root (default ``$RUNS_DIR``, else ``runs``).
        workers: parallel runs.
        threads_per_run: CPU threads per run (default: free cores // workers, at least 1).
        backend: ``local`` or ``ray``.
        address: Ray cluster address (``auto``, ``host:port``); ``None`` = a local instance.
        retry_failed: rerun runs that failed before.
    """

    package: str
    command: tuple[str, ...]
    seeds: str
    grid: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    name: str | None = None
    runs_dir: str | None = None
    workers: int = 1
    threads_per_run: int | None = None
    backend: str = "local"
    address: str | None = None
    retry_failed: bool = False


@dataclasses.dataclass
class SweepOutcome:
    """What a sweep did.

    Attributes:
        sweep_dir: the sweep directory (holds ``sweep.json`` and one folder per run).
        results: this invocation's results (skipped runs are not in it).
        skipped: runs already finished (or failed, without ``--retry-failed``).
        wall_s: wall time of this invocation's runs.
        threads: threads per run used.
    """

    sweep_dir: Path
    results: list[RunResult]
    skipped: list[str]
    wall_s: float
    threads: int

    @property
    def failed(self) -> list[RunResult]:
        """This invocation's failed runs."""
        return [r for r in self.results if r.returncode != 0]

    def raise_if_failed(self, what: str) -> None:
        """Raise a one-line :class:`UserError` naming the first failed run, if any failed.

        Args:
            what: the runs' name in the message, e.g. ``"train-bc"``.
        """
        if self.failed:
            first = self.failed[0]
            raise UserError(
                f"{len(self.failed)} {what} run(s) failed, e.g. {first.name}: {first.error}; "
                f"see {self.sweep_dir}"
            )


def free_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads(workers: int) -> int:
    """Threads per run so that ``workers`` parallel runs never oversubscribe the machine."""
    return max(1, free_cores() // max(1, workers))


@dataclasses.dataclass(frozen=True)
class PreparedSweep:
    """A checked sweep, ready to run (nothing is written before :func:`run_sweep`)."""

    spec: CommandSpec
    sweep_dir: Path
    grid: dict[str, list[str]]
    seeds: list[int]
    runs: list[RunSpec]
    options: SweepOptions


def prepare_sweep(options: SweepOptions) -> PreparedSweep:
    """Check everything (command, seeds, grid keys, args, workers) before anything starts.

    Raises:
        UserError: the first problem, naming the flag and the fix.
    """
    if options.backend not in ("local", "ray"):
        raise UserError(f"--backend {options.backend!r}: expected local or ray")
    if options.workers < 1:
        raise UserError(f"--workers must be at least 1, got {options.workers}")
    if options.threads_per_run is not None and options.threads_per_run < 1:
        raise UserError(f"--threads-per-run must be at least 1, got {options.threads_per_run}")
    if options.address is not None and options.backend != "ray":
        raise UserError("--address needs --backend ray")
    seeds = parse_seeds(options.seeds)
    spec = resolve_command(options.package, options.command)
    missing = [flag for flag in ("seed", "run-name") if flag not in spec.flags]
    if missing:
        raise UserError(
            f"{spec.package} {' '.join(spec.command)} has no --{missing[0]}; only commands "
            "with --seed and --run-name can be swept"
        )
    grid = parse_grid(options.grid, spec)
    check_extra_args(options.args, spec)
    name = options.name or spec.slug
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"--name {name!r}: use a plain folder name")
    sweep_dir = resolve_runs_dir(options.runs_dir) / spec.package / "sweeps" / name
    runs = expand(grid, seeds)
    return PreparedSweep(spec, sweep_dir, grid, seeds, runs, options)


def _task(prepared: PreparedSweep, run: RunSpec, threads: int) -> RunTask:
    spec, options = prepared.spec, prepared.options
    run_dir = prepared.sweep_dir / run.name
    argv = [*spec.command, *options.args]
    for key, value in run.config.items():
        argv += [f"--{key}", value]
    argv += ["--seed", str(run.seed), "--run-name", run.name]
    argv += ["--runs-dir", str(resolve_runs_dir(options.runs_dir))]
    if "threads" in spec.flags:
        argv += ["--threads", str(threads)]
    if (run_dir / "checkpoints" / "last.pt").is_file():
        argv.append("--resume")
    elif run_dir.exists():  # a run that died before its first checkpoint: start it anew
        shutil.rmtree(run_dir)
    (prepared.sweep_dir / "logs" / f"{run.name}.log").unlink(missing_ok=True)
    return RunTask(run.name, spec.module, tuple(argv), str(prepared.sweep_dir), threads)


def run_sweep(
    prepared: PreparedSweep,
    *,
    progress: bool | None = None,
    on_result: Callable[[RunResult], None] | None = None,
) -> SweepOutcome:
    """Run the sweep's unfinished runs and keep ``sweep.json`` current.

    Args:
        prepared: from :func:`prepare_sweep`.
        progress: show the progress bar (``None``: only on a terminal).
        on_result: called with each result as it arrives.

    Raises:
        UserError: the sweep directory holds a different sweep; Ray problems.
    """
    options = prepared.options
    threads = options.threads_per_run or default_threads(options.workers)
    shutdown = None
    if options.backend == "ray":  # connect (or fail) before anything is written
        from compkit_utils.sweep.ray_backend import connect

        ray, started = connect(options.address, options.workers * threads)
        shutdown = ray.shutdown if started else None
    try:
        return _run(prepared, threads, progress, on_result)
    finally:
        if shutdown is not None:
            shutdown()


def _run(
    prepared: PreparedSweep,
    threads: int,
    progress: bool | None,
    on_result: Callable[[RunResult], None] | None,
) -> SweepOutcome:
    options, spec = prepared.options, prepared.spec
    identity = {
        "package": spec.package,
        "command": list(spec.command),
        "args": list(options.args),
        "grid": prepared.grid,
    }
    data = mf.open_manifest(
        prepared.sweep_dir, identity, prepared.seeds, prepared.runs, git_commit()
    )
    todo, skipped = [], []
    for run in prepared.runs:
        status = data["runs"][run.name]["status"]
        if status == mf.FINISHED or (status == mf.FAILED and not options.retry_failed):
            skipped.append(run.name)
        else:
            todo.append(run)
    prepared.sweep_dir.mkdir(parents=True, exist_ok=True)
    mf.write_manifest(prepared.sweep_dir, data)
    tasks = [_task(prepared, run, threads) for run in todo]
    for task in tasks:
        entry = data["runs"][task.name]
        entry.update(status=mf.RUNNING, error=None, started=mf.now(), threads=threads)
        entry["resumed"] = "--resume" in task.argv
        entry["backend"] = options.backend
    mf.write_manifest(prepared.sweep_dir, data)

    results: list[RunResult] = []
    begin = time.perf_counter()
    stream = _backend_stream(prepared, tasks, threads)
    bar = _progress_bar(len(tasks), f"{spec.package} {prepared.sweep_dir.name}", progress)
    try:
        for result in stream:
            entry = data["runs"][result.name]
            interrupted = result.returncode == 130
            entry.update(
                status=mf.FINISHED
                if result.returncode == 0
                else (mf.RUNNING if interrupted else mf.FAILED),
                error=result.error,
                returncode=result.returncode,
                seconds=round(result.seconds, 3),
                host=result.host,
                finished=mf.now(),
            )
            mf.write_manifest(prepared.sweep_dir, data)
            results.append(result)
            if bar is not None:
                bar.update(1)
            if on_result is not None:
                on_result(result)
    finally:
        if bar is not None:
            bar.close()
        with contextlib.suppress(OSError):
            (prepared.sweep_dir / "logs").rmdir()  # only when no run's log is left there
    return SweepOutcome(prepared.sweep_dir, results, skipped, time.perf_counter() - begin, threads)


def _backend_stream(
    prepared: PreparedSweep, tasks: Sequence[RunTask], threads: int
) -> Iterator[RunResult]:
    options = prepared.options
    if not tasks:
        return iter(())
    if options.backend == "ray":
        from compkit_utils.sweep.ray_backend import run_ray

        marker = f".sweep-{uuid.uuid4().hex[:12]}"
        (prepared.sweep_dir / marker).touch()

        def stream() -> Iterator[RunResult]:
            try:
                yield from run_ray(tasks, threads=threads, marker=marker)
            finally:
                (prepared.sweep_dir / marker).unlink(missing_ok=True)

        return stream()
    from compkit_utils.sweep.local import run_local

    return run_local(
        tasks,
        workers=options.workers,
        threads=threads,
        module=prepared.spec.module,
        preload=preload_modules(prepared.spec.package),
    )


def _progress_bar(total: int, desc: str, enabled: bool | None) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    disable = None if enabled is None else not enabled
    return tqdm(total=total, desc=desc, unit="run", disable=disable, file=sys.stderr)
