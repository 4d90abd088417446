"""Blocks of the seed scan: solving one block of seeds, and its verified file.

The generator scans seeds ``seed_start, seed_start + 1, ...`` in blocks of ``block_size``
consecutive seeds. A worker solves one block (:func:`solve_block`): for every seed it builds
the layout, skips the seed if its goal is already full, otherwise runs the full-visibility
bot and keeps the demonstration when it succeeds with at least ``min_length`` actions. The
block's demonstrations (in seed order) are written atomically to
``<out>/.shards/block_<index>.npz``; the parent then records the file's SHA-256 in
``block_<index>.sha256``. A block file is reused on ``--resume`` only when that checksum
matches (:func:`load_block_summary`).

Whether a seed is kept depends on the seed alone (its layout, mission and bot solution), so
the dataset (per goal, the first ``per_goal`` kept seeds in seed order) does not depend on how
the scan is split into blocks or processes.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from compkit_utils.datasets.info import sha256_file
from compkit_utils.io import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

SHARD_DIR = ".shards"
N_GOALS = 36

_ENV: Any = None  # one environment per process, reused across blocks


def block_path(out_dir: Path, block: int) -> Path:
    """``<out>/.shards/block_<six digits>.npz``."""
    return out_dir / SHARD_DIR / f"block_{block:06d}.npz"


def _checksum_path(path: Path) -> Path:
    return path.with_suffix(".sha256")


def _env() -> Any:
    global _ENV
    if _ENV is None:
        from factored_attention_babyai.env import make_env

        _ENV = make_env()
    return _ENV


def solve_seed(env: Any, seed: int, skip: frozenset[int] = frozenset()) -> dict[str, Any] | None:
    """Solve one seed with the full-visibility bot.

    Args:
        env: a :class:`~factored_attention_babyai.env.GoToLocalEnv`.
        seed: the reset seed.
        skip: goal indices (into :data:`~factored_attention_babyai.vocab.GOALS`) not to solve.

    Returns:
        ``None`` when the goal is skipped; otherwise ``goal``, ``success`` (reward > 0),
        ``frames`` ``[T, 8, 8, 3]`` uint8 (observation before each action), ``directions``
        ``[T]``, ``actions`` ``[T]`` (the last is ``done`` on success) and ``target``
        ``[8, 8]`` bool (initial target mask).
    """
    from factored_attention_babyai.env import FullyObservedBot
    from factored_attention_babyai.vocab import goal_index

    goal = goal_index(env.reset_layout(seed=seed))
    if goal in skip:
        return None
    obs = env.finish_reset()
    bot = FullyObservedBot(env)
    frames, directions, actions = [obs["image"]], [obs["direction"]], []
    target = obs["target_mask"]
    reward = 0.0
    while True:
        action = int(bot.replan())  # pyright: ignore[reportArgumentType]
        actions.append(action)
        obs, reward, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
        frames.append(obs["image"])
        directions.append(obs["direction"])
    return {
        "goal": goal,
        "success": reward > 0,
        "frames": np.stack(frames),
        "directions": np.asarray(directions, dtype=np.int8),
        "actions": np.asarray(actions, dtype=np.int8),
        "target": target,
    }


def solve_block(job: dict[str, Any]) -> dict[str, Any]:
    """Worker: solve the seeds of one block and write the block file atomically.

    Args:
        job: ``block``, ``first_seed``, ``block_size``, ``min_length``, ``skip`` (goal
            indices already full when the block was dispatched) and ``path``.

    Returns:
        The block summary (see :func:`summarize`), without the checksum.
    """
    env = _env()
    skip = frozenset(job["skip"])
    seeds, goals, lengths, targets = [], [], [], []
    frames, directions, actions = [], [], []
    solves = too_short = failures = 0
    first = job["first_seed"]
    for seed in range(first, first + job["block_size"]):
        demo = solve_seed(env, seed, skip)
        if demo is None:
            continue
        solves += 1
        if not demo["success"]:
            failures += 1
            continue
        if len(demo["actions"]) < job["min_length"]:
            too_short += 1
            continue
        seeds.append(seed)
        goals.append(demo["goal"])
        lengths.append(len(demo["actions"]))
        targets.append(demo["target"])
        frames.append(demo["frames"])
        directions.append(demo["directions"])
        actions.append(demo["actions"])
    arrays = {
        "seeds": np.asarray(seeds, dtype=np.int64),
        "goals": np.asarray(goals, dtype=np.int8),
        "lengths": np.asarray(lengths, dtype=np.int16),
        "targets": np.asarray(targets, dtype=bool).reshape(-1, 8, 8),
        "frames": np.concatenate(frames) if frames else np.zeros((0, 8, 8, 3), np.uint8),
        "directions": np.concatenate(directions) if directions else np.zeros(0, np.int8),
        "actions": np.concatenate(actions) if actions else np.zeros(0, np.int8),
        "stats": np.asarray([job["block_size"], solves, too_short, failures], dtype=np.int64),
    }
    path = Path(job["path"])
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    return summarize(job["block"], arrays)


def summarize(block: int, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """What the parent needs of a block without reading its frames."""
    stats = arrays["stats"].tolist()
    return {
        "block": block,
        "goals": arrays["goals"].astype(np.int64).tolist(),
        "lengths": arrays["lengths"].astype(np.int64).tolist(),
        "seeds_scanned": stats[0],
        "solves": stats[1],
        "too_short": stats[2],
        "failures": stats[3],
    }


def record_checksum(path: Path) -> str:
    """Record the SHA-256 of a finished block file (by the parent, after the worker)."""
    digest = sha256_file(path)
    atomic_write_text(_checksum_path(path), digest + "\n")
    return digest


def load_block_summary(path: Path) -> dict[str, Any] | None:
    """The summary of a finished, verified block file, or ``None`` to solve it again.

    A block without a recorded checksum (written just before an interruption), with a
    checksum that does not match, or unreadable is removed and solved again.
    """
    if not path.is_file():
        return None
    checksum = _checksum_path(path)
    reason = None
    if not checksum.is_file():
        reason = "no checksum recorded (interrupted)"
    elif checksum.read_text().strip() != sha256_file(path):
        reason = "SHA-256 mismatch"
    else:
        try:
            arrays = read_block(path, ("goals", "lengths", "stats"))
            summary = summarize(int(path.stem.split("_")[1]), arrays)
            summary["sha256"] = checksum.read_text().strip()
            return summary
        except (OSError, ValueError, KeyError) as exc:
            reason = f"unreadable ({exc})"
    log.warning("%s: %s; solving the block again", path, reason)
    path.unlink(missing_ok=True)
    checksum.unlink(missing_ok=True)
    return None


def read_block(path: Path, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Arrays of a block file (all, or ``keys`` only)."""
    data = path.read_bytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {key: npz[key] for key in (keys or npz.files)}
