"""``sweep.json``: what a sweep runs and the status of every run (written atomically)."""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from compkit_utils.errors import UserError
from compkit_utils.io import atomic_write_json
from compkit_utils.sweep.grid import RunSpec

MANIFEST = "sweep.json"
VERSION = 1
IDENTITY = ("package", "command", "args", "grid")
"""Fields that must match when a sweep directory is reused (seeds may grow)."""

PENDING, RUNNING, FINISHED, FAILED = "pending", "running", "finished", "failed"


def now() -> str:
    """UTC time stamp of the manifest (ISO 8601, seconds)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def read_manifest(sweep_dir: str | Path) -> dict[str, Any]:
    """Load ``<sweep_dir>/sweep.json``.

    Raises:
        UserError: missing or unreadable, naming the file.
    """
    path = Path(sweep_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise UserError(f"{path} not found; is {sweep_dir} a sweep directory?") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc


def open_manifest(
    sweep_dir: Path,
    identity: Mapping[str, Any],
    seeds: Sequence[int],
    runs: Sequence[RunSpec],
    git_commit: str | None,
) -> dict[str, Any]:
    """The manifest of a new sweep, or the existing one extended by new runs.

    Args:
        sweep_dir: the sweep directory (not created here).
        identity: ``package``, ``command``, ``args`` and ``grid`` of this invocation.
        seeds: this invocation's seeds.
        runs: this invocation's runs.
        git_commit: commit of the checkout, recorded per invocation.

    Raises:
        UserError: the directory holds a sweep with another command, args or grid.
    """
    path = sweep_dir / MANIFEST
    if path.exists():
        data = read_manifest(sweep_dir)
        for key in IDENTITY:
            if data.get(key) != identity[key]:
                raise UserError(
                    f"{path} holds a sweep with a different {key} ({data.get(key)!r}, now "
                    f"{identity[key]!r}); pick another --name or delete {sweep_dir}"
                )
        data["seeds"] = sorted(set(data.get("seeds", [])) | set(seeds))
    else:
        data = {"version": VERSION, **identity, "seeds": list(seeds), "created": now(), "runs": {}}
    data["git_commit"] = git_commit
    data["updated"] = now()
    for run in runs:
        data["runs"].setdefault(
            run.name,
            {"config": run.config, "seed": run.seed, "status": PENDING, "error": None},
        )
    return data


def write_manifest(sweep_dir: Path, data: dict[str, Any]) -> Path:
    """Write ``sweep.json`` atomically (a reader never sees half a file)."""
    data["updated"] = now()
    return atomic_write_json(sweep_dir / MANIFEST, data)
