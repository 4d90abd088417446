"""Run directories: ``<runs-dir>/<package>/<run-name>/`` with a ``config.json``."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import subprocess
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from compkit_utils.io import atomic_write_json

RUNS_DIR_ENV = "RUNS_DIR"


def resolve_runs_dir(runs_dir: str | os.PathLike[str] | None = None) -> Path:
    """The runs root: the explicit value, else ``$RUNS_DIR``, else ``runs``."""
    if runs_dir is not None and str(runs_dir) != "":
        return Path(runs_dir)
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs")


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
    root = resolve_runs_dir(runs_dir) / package
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
    from compkit_utils.errors import UserError

    root = resolve_runs_dir(runs_dir) / package
    if run_name is not None:
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
    from compkit_utils.errors import UserError

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
