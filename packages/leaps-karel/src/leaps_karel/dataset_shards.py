"""Shards of a dataset generation: the worker, checksums, resumption and the output folder.

Each shard is written atomically to ``<out>/.shards/shard_<six-digit index>.hdf5`` by a worker
(`run_shard`); the parent records its SHA-256 in ``.shards/checksums.json``, and a resumed
generation reuses a shard only when that checksum still matches (`reuse_shard`). Used by
:mod:`leaps_karel.dataset`.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from compkit_utils.datasets.generation import prepare_generation_dir
from compkit_utils.datasets.hdf5_write import atomic_hdf5
from compkit_utils.datasets.info import INFO_FILE, read_info, sha256_file
from compkit_utils.errors import UserError
from leaps_karel.config import DatasetConfig
from leaps_karel.demos import candidate_rng, candidate_stream, demos_for_program
from leaps_karel.reader import DATA_FILE, FORMAT_VERSION, ID_FILE

log = logging.getLogger(__name__)

SHARD_DIR = ".shards"
CHECKSUMS = "checksums.json"
DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _fix(out_dir: Path) -> str:
    return f"delete it and rerun `leaps-karel generate-dataset --out-dir {out_dir} --resume`"


def _shard_path(out_dir: Path, shard: int) -> Path:
    return out_dir / SHARD_DIR / f"shard_{shard:06d}.hdf5"


def _write_group(group: Any, arrays: dict[str, np.ndarray], compression: str | None) -> None:
    for name, array in arrays.items():
        if compression is not None and array.size >= 64:
            group.create_dataset(name, data=array, compression=compression, chunks=array.shape)
        else:
            group.create_dataset(name, data=array)


def _run_shard(job: dict[str, Any]) -> dict[str, Any]:
    """Worker: generate one shard of candidates and write it atomically; returns its summary."""
    params = DatasetConfig(**job["params"])
    path = Path(job["path"])
    stats: collections.Counter[str] = collections.Counter()
    accepted: list[int] = []
    with atomic_hdf5(path) as out:
        handle = out.file
        for index, tokens in job["candidates"]:
            demos = demos_for_program(tokens, candidate_rng(params.seed, index), params, stats)
            if demos is None:
                continue
            _write_group(handle.create_group(f"c{index}"), demos.arrays(), job["compression"])
            accepted.append(index)
            out.check()
        handle.attrs["shard"] = job["shard"]
        handle.attrs["first_candidate"] = job["candidates"][0][0]
        handle.attrs["num_candidates"] = len(job["candidates"])
        handle.attrs["accepted"] = np.array(accepted, dtype=np.int64)
        handle.attrs["stats"] = json.dumps(dict(stats))
    return {
        "shard": job["shard"],
        "accepted": len(accepted),
        "stats": dict(stats),
        "sha256": sha256_file(path),
    }


def _reuse_shard(path: Path, expected: str | None, out_dir: Path) -> dict[str, Any] | None:
    """Summary of a finished shard whose checksum matches, or ``None`` to regenerate it.

    A shard without a recorded checksum was renamed into place just before an interruption:
    it is regenerated. One whose checksum differs is reported, never merged.

    Raises:
        UserError: the shard is corrupt (checksum mismatch or unreadable).
    """
    import h5py

    if expected is None:
        log.debug("%s: no checksum recorded (interrupted); regenerating it", path)
        path.unlink(missing_ok=True)
        return None
    if sha256_file(path) != expected:
        raise UserError(f"{path}: corrupt shard (SHA-256 mismatch); {_fix(out_dir)}")
    try:
        with h5py.File(path, "r") as handle:
            attrs: Any = handle.attrs
            return {
                "shard": int(attrs["shard"]),
                "accepted": len(attrs["accepted"]),
                "stats": json.loads(str(attrs["stats"])),
                "sha256": expected,
            }
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise UserError(f"{path}: corrupt shard (unreadable); {_fix(out_dir)}") from exc


def _remove_temporaries(out_dir: Path) -> None:
    """Remove the temporary files of interrupted writes (``.<name>.<random>.tmp``)."""
    for folder in (out_dir, out_dir / SHARD_DIR):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


def _manifest(params: DatasetConfig, shard_size: int, compression: str | None) -> dict:
    # The shards do not depend on the number of programs: a resumed run may ask for more.
    content = {k: v for k, v in dataclasses.asdict(params).items() if k != "num_programs"}
    return {
        "format_version": FORMAT_VERSION,
        "params": content,
        "shard_size": shard_size,
        "compression": compression,
    }


def _finished_dataset(
    out_dir: Path, params: DatasetConfig, shard_size: int, compression: str | None
) -> bool:
    """``--resume`` on a folder with ``dataset_info.json``: is the dataset complete and intact?

    Returns:
        True when every recorded file is present with its checksum (nothing to do); False when
        some are missing (deleted to be regenerated): ``dataset_info.json`` is then removed.

    Raises:
        UserError: other settings, or a recorded file whose checksum differs.
    """
    info = read_info(out_dir)
    same = (
        info.extra.get("params") == dataclasses.asdict(params)
        and info.extra.get("shard_size") == shard_size
        and info.extra.get("compression") == compression
    )
    if not same:
        raise UserError(
            f"{out_dir}: holds a dataset generated with other settings; rerun with the same "
            "settings, pass --overwrite to replace it, or choose another --out-dir"
        )
    missing = False
    for name, expected in info.files.items():
        path = out_dir / name
        if not path.is_file():
            missing = True
        elif sha256_file(path) != expected:
            raise UserError(f"{path}: corrupt (SHA-256 mismatch); {_fix(out_dir)}")
    if missing:
        (out_dir / INFO_FILE).unlink()
    return not missing


def _prepare_out_dir(
    out_dir: Path, manifest: dict[str, Any], overwrite: bool, resume: bool
) -> None:
    outputs = (DATA_FILE, ID_FILE)
    kwargs = {"outputs": outputs, "overwrite": overwrite, "resume": resume, "shard_dir": SHARD_DIR}
    if prepare_generation_dir(out_dir, manifest, **kwargs):
        log.debug("resuming the interrupted generation in %s", out_dir)


def _read_checksums(out_dir: Path) -> dict[str, str]:
    path = out_dir / SHARD_DIR / CHECKSUMS
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: corrupt (not JSON); {_fix(out_dir)}") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: corrupt (not a JSON object); {_fix(out_dir)}")
    return {str(k): str(v) for k, v in data.items()}


def _iter_jobs(
    params: DatasetConfig, out_dir: Path, shard_size: int, compression: str | None
) -> Iterator[dict[str, Any]]:
    stream = candidate_stream(params)
    index = 0
    shard = 0
    while True:
        candidates = []
        for _ in range(shard_size):
            candidates.append((index, next(stream)))
            index += 1
        yield {
            "shard": shard,
            "path": str(_shard_path(out_dir, shard)),
            "candidates": candidates,
            "params": dataclasses.asdict(params),
            "compression": compression,
        }
        shard += 1
