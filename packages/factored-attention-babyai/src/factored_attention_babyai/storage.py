"""Storage of the demonstration dataset: HDF5 (spec §2.5), TFDS ArrayRecord, dataset_info.

``<out>/data.hdf5`` holds groups ``train`` (the 24 in-distribution goals) and ``valid`` (the
12 held-out goals, spec §2.4); each group holds, for its ``N`` demonstrations in seed order,
padded to the longest demonstration of the whole dataset (``Tmax``):

| dataset | dtype | shape | content |
|---|---|---|---|
| ``envs`` | int64 | [N] | reset seed |
| ``missions`` | uint8 | [N, 5] | token ids (:data:`~.vocab.WORDS`) |
| ``mission_masks`` | uint8 | [N, 5] | all ones |
| ``image_trajectories`` | uint8 | [N, Tmax, 8, 8, 3] | frame before each action, zero-padded |
| ``direction_trajectories`` | int8 | [N, Tmax] | zero-padded |
| ``action_trajectories`` | int8 | [N, Tmax] | padded with −1 |
| ``rewards`` | float32 | [N, Tmax] | 1 at ``T−1``, else 0 |
| ``returns`` | float32 | [N, Tmax] | ``0.9^(T−1−t)``, zero-padded |
| ``trajectory_masks`` | bool | [N, Tmax] | True on valid steps |
| ``trajectory_lengths`` | int16 | [N] | ``T`` |
| ``rewarding_idxs`` | int16 | [N] | ``T−1`` |
| ``targets`` | bool | [N, 8, 8] | initial target mask, ``[y, x]`` |
| ``goals`` | int8 | [N] | index into :data:`~.vocab.GOALS` (an addition) |

The file attribute ``words`` is the vocabulary joined by spaces. ``<out>/tfds/`` holds the same
rows as a TFDS dataset ``babyai_gotolocal`` (splits ``train``/``valid``, ArrayRecord, readable
with ``tfds.data_source`` without TensorFlow). ``dataset_info.json`` (written last: its
presence marks a finished dataset) records the settings and the SHA-256 of every file.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from compkit_utils.datasets.info import DatasetInfo, read_info, sha256_file, write_info
from compkit_utils.errors import UserError
from factored_attention_babyai.blocks import N_GOALS, SHARD_DIR, block_path, read_block
from factored_attention_babyai.vocab import GOALS, HELD_OUT, OOD_GOALS, WORDS, tokenize

__all__ = [
    "DATASET_NAME",
    "DATA_FILE",
    "GAMMA",
    "KEYS",
    "SPLITS",
    "TFDS_DIR",
    "TFDS_NAME",
    "pad_demos",
    "returns_for",
    "verify_finished",
    "write_dataset",
]

DATA_FILE = "data.hdf5"
TFDS_DIR = "tfds"
TFDS_NAME = "babyai_gotolocal"
DATASET_NAME = "babyai-gotolocal"
SPLITS = ("train", "valid")
GAMMA = 0.9
KEYS = (
    "envs",
    "missions",
    "mission_masks",
    "image_trajectories",
    "direction_trajectories",
    "action_trajectories",
    "rewards",
    "returns",
    "trajectory_masks",
    "trajectory_lengths",
    "rewarding_idxs",
    "targets",
    "goals",
)


def returns_for(length: int, gamma: float = GAMMA) -> np.ndarray:
    """Monte-Carlo returns of a demo rewarded once at its last step: ``[T]``, ``γ^(T−1−t)``."""
    return (gamma ** np.arange(length - 1, -1, -1)).astype(np.float32)


def pad_demos(block: dict[str, np.ndarray], keep: np.ndarray, tmax: int) -> dict[str, np.ndarray]:
    """The kept demonstrations of a block as padded rows of the HDF5 layout.

    Args:
        block: arrays of a block file (ragged frames/directions/actions, see :mod:`.blocks`).
        keep: ``[n]`` bool, which of the block's demonstrations to return.
        tmax: padded length.

    Returns:
        ``KEYS`` → arrays with one row per kept demonstration, in block (seed) order.
    """
    lengths = block["lengths"].astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    index = np.flatnonzero(keep)
    n = len(index)
    images = np.zeros((n, tmax, 8, 8, 3), np.uint8)
    directions = np.zeros((n, tmax), np.int8)
    actions = np.full((n, tmax), -1, np.int8)
    rewards = np.zeros((n, tmax), np.float32)
    returns = np.zeros((n, tmax), np.float32)
    masks = np.zeros((n, tmax), bool)
    missions = np.zeros((n, 5), np.uint8)
    for row, i in enumerate(index):
        t, start = int(lengths[i]), int(offsets[i])
        images[row, :t] = block["frames"][start : start + t]
        directions[row, :t] = block["directions"][start : start + t]
        actions[row, :t] = block["actions"][start : start + t]
        rewards[row, t - 1] = 1.0
        returns[row, :t] = returns_for(t)
        masks[row, :t] = True
        missions[row] = tokenize(GOALS[int(block["goals"][i])])
    return {
        "envs": block["seeds"][index].astype(np.int64),
        "missions": missions,
        "mission_masks": np.ones((n, 5), np.uint8),
        "image_trajectories": images,
        "direction_trajectories": directions,
        "action_trajectories": actions,
        "rewards": rewards,
        "returns": returns,
        "trajectory_masks": masks,
        "trajectory_lengths": lengths[index].astype(np.int16),
        "rewarding_idxs": (lengths[index] - 1).astype(np.int16),
        "targets": block["targets"][index].astype(bool),
        "goals": block["goals"][index].astype(np.int8),
    }


def _selection(blocks: Iterable[dict[str, Any]], per_goal: int) -> tuple[list[np.ndarray], int]:
    """Per block, which demonstrations are among the first ``per_goal`` of their goal; Tmax."""
    counts = [0] * N_GOALS
    keeps, tmax = [], 0
    for summary in blocks:
        keep = np.zeros(len(summary["goals"]), bool)
        for i, (goal, length) in enumerate(zip(summary["goals"], summary["lengths"], strict=True)):
            if counts[goal] < per_goal:
                counts[goal] += 1
                keep[i] = True
                tmax = max(tmax, int(length))
        keeps.append(keep)
    if min(counts) < per_goal:
        raise AssertionError(f"blocks hold too few demonstrations: {counts}")
    return keeps, tmax


def _write_hdf5(
    out: Path, blocks: list[dict[str, Any]], keeps: list[np.ndarray], tmax: int
) -> dict[str, int]:
    from compkit_utils.datasets.hdf5_write import HDF5Writer

    ood = np.array([goal in OOD_GOALS for goal in GOALS], bool)
    sizes: dict[str, int] = dict.fromkeys(SPLITS, 0)
    attrs = {
        "words": " ".join(WORDS),
        "tmax": tmax,
        "gamma": GAMMA,
        "goals": json.dumps(list(GOALS)),
        "held_out": json.dumps(sorted(" ".join(pair) for pair in HELD_OUT)),
    }
    with HDF5Writer(out / DATA_FILE, attrs=attrs, compression="gzip") as writer:
        for summary, keep in zip(blocks, keeps, strict=True):
            if not keep.any():
                continue
            block = read_block(block_path(out, summary["block"]))
            in_ood = ood[block["goals"].astype(np.int64)]
            for split, mask in (("train", keep & ~in_ood), ("valid", keep & in_ood)):
                if mask.any():
                    rows = pad_demos(block, mask, tmax)
                    writer.append({f"{split}/{key}": value for key, value in rows.items()})
                    sizes[split] += int(mask.sum())
    return sizes


def _write_tfds(out: Path) -> list[str]:
    """The TFDS copy of ``data.hdf5`` (both splits); returns its files relative to ``out``."""
    import logging

    import h5py
    import tensorflow_datasets as tfds

    from compkit_utils.datasets.tfds import prepare_tfds

    tfds.disable_progress_bar()
    logging.getLogger("absl").setLevel(logging.WARNING)
    shutil.rmtree(out / TFDS_DIR, ignore_errors=True)
    splits: dict[str, Any] = {}
    with h5py.File(out / DATA_FILE, "r") as handle:
        for split in SPLITS:
            group: Any = handle[split]
            splits[split] = {key: np.asarray(group[key]) for key in KEYS}
    prepare_tfds(
        TFDS_NAME,
        splits,
        out / TFDS_DIR,
        description="BabyAI GoToLocal demonstrations, 36 goals (factored-attention-babyai).",
    )
    return sorted(str(p.relative_to(out)) for p in (out / TFDS_DIR).rglob("*") if p.is_file())


def write_dataset(
    out: Path,
    blocks: list[dict[str, Any]],
    per_goal: int,
    *,
    formats: tuple[str, ...],
    settings: dict[str, Any],
    extra: dict[str, Any],
    keep_shards: bool,
) -> dict[str, Any]:
    """Write the dataset files from the merged blocks; ``dataset_info.json`` last.

    Returns:
        Counts: ``train``, ``valid``, ``tmax``, ``seeds_scanned``, ``solves``, ``too_short``.
    """
    from factored_attention_babyai import __version__

    keeps, tmax = _selection(blocks, per_goal)
    if "hdf5" not in formats and "tfds" not in formats:
        raise UserError("--formats: choose at least one of hdf5, tfds")
    sizes = _write_hdf5(out, blocks, keeps, tmax)
    files = [DATA_FILE]
    if "tfds" in formats:
        files += _write_tfds(out)
    if keep_shards:
        files += [f"{SHARD_DIR}/{block_path(out, b['block']).name}" for b in blocks]
    counts = {
        "per_goal": per_goal,
        "goals": N_GOALS,
        "train": sizes["train"],
        "valid": sizes["valid"],
        "tmax": tmax,
        "seeds_scanned": sum(b["seeds_scanned"] for b in blocks),
        "solves": sum(b["solves"] for b in blocks),
        "too_short": sum(b["too_short"] for b in blocks),
        "failures": sum(b["failures"] for b in blocks),
    }
    info = DatasetInfo(
        name=DATASET_NAME,
        generator="factored_attention_babyai.generate",
        version=__version__,
        seed=int(settings["seed_start"]),
        counts=counts,
        extra={"settings": settings, "formats": list(formats), **extra},
    )
    write_info(out, info, files=files)
    if "hdf5" not in formats:  # TFDS only: the HDF5 file was the staging copy
        (out / DATA_FILE).unlink()
        info = read_info(out)
        write_info(out, info, files=[f for f in info.files if f != DATA_FILE])
    return dict(counts)


def verify_finished(out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """``--resume`` on a finished dataset: check its settings and checksums, change nothing.

    Raises:
        UserError: other settings, or a missing or corrupt file (naming it).
    """
    info = read_info(out)
    if info.extra.get("settings") != settings:
        raise UserError(
            f"{out}: holds a dataset generated with other settings; pass --overwrite to "
            "replace it or choose another --out-dir"
        )
    for name, expected in info.files.items():
        path = out / name
        if not path.is_file() or sha256_file(path) != expected:
            state = "missing" if not path.is_file() else "corrupt (SHA-256 mismatch)"
            raise UserError(f"{path}: {state}; regenerate with --overwrite")
    summary: dict[str, Any] = dict(info.counts)
    summary.update(blocks_solved=0, blocks_reused=0, seconds=0.0, scan_seconds=0.0)
    return summary
