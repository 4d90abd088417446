"""Run directories: ``<runs-dir>/<package>/<run-name>/`` with a ``config.json``.

:func:`open_run` is the one way a command gets its run directory: created atomically (or
found again for ``--resume``), locked while the command runs, and removed again if the
command fails before writing a checkpoint. :func:`save_on_interrupt` writes a checkpoint
when the user presses Ctrl-C.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from compkit_utils.errors import UserError
from compkit_utils.io import atomic_write_json

RUNS_DIR_ENV = "RUNS_DIR"
RUN_PARENT_ENV = "COMPKIT_RUN_PARENT"
"""When set, run directories go directly under this folder (``compkit sweep`` sets it)."""
LOCK_FILE = ".lock"


def resolve_runs_dir(runs_dir: str | os.PathLike[str] | None = None) -> Path:
    """The runs root: the explicit value, else ``$RUNS_DIR``, else ``runs``."""
    if runs_dir is not None and str(runs_dir) != "":
        return Path(runs_dir)
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs")


def run_root(package: str, runs_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding a package's run directories.

    ``$COMPKIT_RUN_PARENT`` when set (runs of a sweep), else ``<runs-dir>/<package>``.
    """
    parent = os.environ.get(RUN_PARENT_ENV)
    if parent:
        return Path(parent)
    return resolve_runs_dir(runs_dir) / package


def check_run_name(name: str, *, flag: str = "--run-name") -> str:
    """Return ``name`` if it is a plain directory name.

    Raises:
        UserError: the name is empty, contains a path separator or NUL, or starts with
            ``.`` (which covers ``.`` and ``..``).
    """
    separators = {"/", "\\", os.sep, *([os.altsep] if os.altsep else [])}
    if not name:
        raise UserError(f"{flag} must not be empty; pass a name such as train-baseline")
    if any(sep in name for sep in separators) or "\0" in name:
        raise UserError(
            f"{flag} {name!r} must be a plain name without path separators; "
            "use --runs-dir to choose the folder"
        )
    if name.startswith("."):
        raise UserError(f"{flag} {name!r} must not start with '.'; pass a plain name")
    return name


def default_run_name(command: str, seed: int, now: _dt.datetime | None = None) -> str:
    """``<command>__<seed>__<UTC yyyymmdd-hhmmss>``."""
    now = now or _dt.datetime.now(_dt.UTC)
    return f"{command}__{seed}__{now.strftime('%Y%m%d-%H%M%S')}"


def make_run_dir(
    package: str,
    command: str,
    seed: int,
    runs_dir: str | os.PathLike[str] | None = None,
    run_name: str | None = None,
) -> Path:
    """Create (or reuse, when resuming a named run) the run directory and return it.

    Args:
        package: distribution name, e.g. ``"compile-seg"``.
        command: the CLI subcommand, e.g. ``"train"``.
        seed: the run's seed (part of the default name).
        runs_dir: runs root (see :func:`resolve_runs_dir`).
        run_name: explicit name; default :func:`default_run_name`.
    """
    if run_name is not None:
        check_run_name(run_name)
    root = run_root(package, runs_dir)
    name = run_name or default_run_name(command, seed)
    path = root / name
    if run_name is None and path.exists():  # two runs started within one second
        suffix = 1
        while (root / f"{name}-{suffix}").exists():
            suffix += 1
        path = root / f"{name}-{suffix}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def resume_run_dir(
    package: str,
    command: str,
    runs_dir: str | os.PathLike[str] | None = None,
    run_name: str | None = None,
) -> Path:
    """The run directory a ``--resume`` continues; it holds ``checkpoints/last.pt``.

    Args:
        package: distribution name, e.g. ``"compile-seg"``.
        command: the CLI subcommand whose runs are candidates, e.g. ``"train"``.
        runs_dir: runs root (see :func:`resolve_runs_dir`).
        run_name: the run to continue; default: the ``<command>__*`` run whose ``last.pt`` is
            newest.

    Raises:
        UserError: the named run has no ``last.pt``, or there is no run to continue.
    """
    root = run_root(package, runs_dir)
    if run_name is not None:
        check_run_name(run_name)
        run_dir = root / run_name
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            raise UserError(
                f"--resume: {run_dir}/checkpoints/last.pt not found; check --run-name and "
                "--runs-dir, or drop --resume to start a new run"
            )
        return run_dir
    candidates = sorted(
        root.glob(f"{command}__*/checkpoints/last.pt"), key=lambda p: p.stat().st_mtime
    )
    if not candidates:
        raise UserError(
            f"--resume: no {command} run with checkpoints/last.pt under {root}; pass "
            "--run-name and --runs-dir of the run to continue"
        )
    return candidates[-1].parent.parent


def check_resume_config(
    checkpoint: str | os.PathLike[str],
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    fields: Iterable[str],
    *,
    ignore: Mapping[str, Iterable[str]] | None = None,
) -> None:
    """Refuse a ``--resume`` whose settings would not continue the same run.

    Args:
        checkpoint: the checkpoint being resumed (for the message).
        saved: the config stored in the checkpoint (as a dict).
        current: the config of this invocation (as a dict).
        fields: the top-level fields that must match (those that shape the trajectory:
            seed, data, model, optimiser, ...); others (device, threads, budget) may change.
        ignore: per field, sub-keys that may differ (e.g. ``{"data": ["data_dir"]}``).

    Raises:
        UserError: naming the first field that differs and its saved value.
    """
    dropped = {key: set(keys) for key, keys in (ignore or {}).items()}

    def pick(config: Mapping[str, Any], key: str) -> Any:
        value = config.get(key)
        if key in dropped and isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if k not in dropped[key]}
        return value

    for key in fields:
        if pick(saved, key) != pick(current, key):
            raise UserError(
                f"--resume: {checkpoint} was trained with a different {key!r} "
                f"({pick(saved, key)!r}); pass the original run's settings (plus --resume) "
                "or start a new run"
            )


@dataclasses.dataclass(frozen=True)
class Run:
    """An open run directory (see :func:`open_run`).

    Attributes:
        path: the run directory.
        resumed: whether the run continues an earlier one (``--resume``).
    """

    path: Path
    resumed: bool

    @property
    def last_checkpoint(self) -> Path:
        """``<run>/checkpoints/last.pt`` (it may not exist yet)."""
        return self.path / "checkpoints" / "last.pt"


@contextlib.contextmanager
def open_run(
    package: str,
    command: str,
    *,
    seed: int,
    runs_dir: str | os.PathLike[str] | None = None,
    run_name: str | None = None,
    resume: bool = False,
) -> Iterator[Run]:
    """Create (or, with ``resume``, find) a run directory and hold it while the body runs.

    Without ``resume`` the directory is created atomically (``mkdir``, never reused); with
    ``resume`` it is the run :func:`resume_run_dir` finds. An exclusive lock on
    ``<run>/.lock`` is held until the body ends (the file is removed then). If the body
    raises anything (also ``KeyboardInterrupt``) and this call created the directory and
    there is no ``checkpoints/last.pt`` yet, the directory (and any parent folders this
    call created) is removed: a failed command leaves nothing behind.

    Args:
        package: distribution name, e.g. ``"compile-seg"``.
        command: the CLI subcommand, e.g. ``"train"`` (part of the default name).
        seed: the run's seed (part of the default name).
        runs_dir: runs root (see :func:`resolve_runs_dir`; ``$COMPKIT_RUN_PARENT`` wins).
        run_name: explicit name (checked by :func:`check_run_name`); default
            ``<command>__<seed>__<UTC time>``.
        resume: continue an existing run instead of creating one.

    Yields:
        The :class:`Run`.

    Raises:
        UserError: a bad or existing run name (without ``resume``), no run to resume, or
            the run is in use by another process.
    """
    if run_name is not None:
        check_run_name(run_name)
    created: list[Path] = []
    if resume:
        path = resume_run_dir(package, command, runs_dir, run_name)
    else:
        path = _create_run_dir(run_root(package, runs_dir), command, seed, run_name, created)
    try:
        with _locked(path):
            yield Run(path=path, resumed=resume)
    except BaseException:
        if created and not (path / "checkpoints" / "last.pt").is_file():
            shutil.rmtree(path, ignore_errors=True)
            for folder in reversed(created[:-1]):  # parents this call made, deepest first
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise


def _create_run_dir(
    root: Path, command: str, seed: int, run_name: str | None, created: list[Path]
) -> Path:
    """``mkdir`` a new run directory under ``root``; records what it made in ``created``."""
    missing = [p for p in (root, *root.parents) if not p.exists()]
    name = run_name or default_run_name(command, seed)
    candidate, suffix = root / name, 0
    try:
        root.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                candidate.mkdir()
            except FileExistsError:
                if run_name is not None:
                    raise UserError(
                        f"run {candidate} already exists; pass --resume to continue it or a "
                        "new --run-name"
                    ) from None
                suffix += 1  # two runs started within one second
                candidate = root / f"{name}-{suffix}"
                continue
            created.extend([*reversed(missing), candidate])  # outermost first
            return candidate
    except BaseException:
        for folder in missing:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``<path>/.lock``; the file is removed afterwards.

    The lock file is unlinked while still locked; a process that opened the old file
    before that notices (its inode is no longer the path's) and tries again. Where fcntl
    is absent (not POSIX) there is no lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock = path / LOCK_FILE
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise UserError(
                f"run {path} is in use by another process; wait for it to finish or pass "
                "another --run-name"
            ) from None
        try:
            current = os.stat(lock)
        except FileNotFoundError:
            current = None
        held = os.fstat(fd)
        if current is not None and (current.st_ino, current.st_dev) == (
            held.st_ino,
            held.st_dev,
        ):
            break
        os.close(fd)  # the file was replaced while we waited: lock the new one
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)


@contextlib.contextmanager
def save_on_interrupt(save: Callable[[], object]) -> Iterator[None]:
    """On ``KeyboardInterrupt`` inside the body, call ``save()`` and re-raise.

    ``save`` writes a checkpoint at the current step, so ``--resume`` continues from there;
    :func:`compkit_utils.config.run_cli` then prints ``interrupted; rerun with --resume to
    continue`` and exits with status 130.
    """
    try:
        yield
    except KeyboardInterrupt:
        save()
        raise


@contextlib.contextmanager
def defer_interrupt() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the body ends, then raise ``KeyboardInterrupt``.

    Wrap the part of a training step that must not be cut in half (the optimizer update
    and the bookkeeping of the finished step), so that :func:`save_on_interrupt` saves a
    consistent state. Outside the main thread (where signal handlers cannot be set) the
    body runs unguarded.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[tuple[int, Any]] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and callable(previous):
            previous(*received[0])


def git_commit(path: str | os.PathLike[str] | None = None) -> str | None:
    """The current git commit of the checkout containing ``path``, or ``None``."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=path or Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def package_version(package: str) -> str | None:
    """Installed version of a distribution, or ``None``."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def write_config(run_dir: str | os.PathLike[str], cfg: Any, package: str) -> Path:
    """Write ``config.json``: the resolved config plus ``_meta`` (package version, commit).

    Args:
        run_dir: the run directory.
        cfg: a (nested) dataclass instance or a plain dict.
        package: distribution name whose version is recorded.
    """
    from compkit_utils.config import to_dict

    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    data["_meta"] = {
        "package": package,
        "package_version": package_version(package),
        "git_commit": git_commit(),
        "config_class": f"{type(cfg).__module__}.{type(cfg).__qualname__}",
    }
    return atomic_write_json(Path(run_dir) / "config.json", data)


class StageLog:
    """The finished stages of a multi-stage command, kept in its run's ``checkpoints/last.pt``.

    An experiment command runs stages (train an expert, sweep seeds, draw figures, ...); after
    each one :meth:`mark` rewrites the checkpoint with the seconds per finished stage, so a
    rerun into the same folder (:meth:`load`) skips them (:meth:`timed`).

    Attributes:
        path: the checkpoint file.
        config: the command's config (as a dict), stored with the stages.
        kind: a tag telling this command's checkpoints from others'.
        stages: stage → seconds it took (summed over reruns).
    """

    def __init__(
        self,
        path: Path,
        config: Mapping[str, Any],
        kind: str,
        package_version: str,
        stages: Mapping[str, float] | None = None,
    ) -> None:
        self.path = path
        self.config = dict(config)
        self.kind = kind
        self.package_version = package_version
        self.stages: dict[str, float] = dict(stages or {})

    @classmethod
    def load(
        cls,
        path: Path,
        config: Mapping[str, Any],
        kind: str,
        package_version: str,
        check: Callable[[dict[str, Any]], None] | None = None,
    ) -> StageLog:
        """The stages recorded in ``path``, for a rerun with ``config``.

        Args:
            path: the checkpoint (``checkpoints/last.pt`` of the run).
            config: this invocation's config, stored with later stages.
            kind: the tag the checkpoint must carry.
            package_version: stored with later stages.
            check: called first with the config saved in ``path``; raises to refuse a rerun
                whose settings differ (e.g. with :func:`check_resume_config`).

        Raises:
            UserError: ``path`` is not a checkpoint of this ``kind``.
        """
        from compkit_utils.checkpoints import load_checkpoint

        saved = load_checkpoint(path)
        if check is not None:
            check(dict(saved["config"]))
        extra = saved.get("extra") or {}
        if extra.get("kind") != kind:
            raise UserError(f"{path} is not the checkpoint of a {kind} run; pick another run")
        return cls(path, config, kind, package_version, extra["stages"])

    def mark(self, stage: str | None, seconds: float = 0.0) -> None:
        """Record ``stage`` as finished after ``seconds`` (None: just write the record)."""
        from compkit_utils.checkpoints import FORMAT_VERSION, save_checkpoint

        if stage is not None:
            self.stages[stage] = self.stages.get(stage, 0.0) + seconds
        save_checkpoint(
            self.path,
            {
                "format_version": FORMAT_VERSION,
                "step": len(self.stages),
                "config": self.config,
                "package_version": self.package_version,
                "extra": {"kind": self.kind, "stages": dict(self.stages)},
            },
        )

    def timed(self, stage: str, fn: Callable[[], Any], *, label: str = "") -> Any:
        """Run ``fn`` unless ``stage`` is done (then print that it is reused); mark it."""
        import time

        if stage in self.stages:
            print(f"{label}{stage}: reused", flush=True)
            return None
        t0 = time.perf_counter()
        result = fn()
        self.mark(stage, time.perf_counter() - t0)
        return result
