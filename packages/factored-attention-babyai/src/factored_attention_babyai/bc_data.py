"""Demonstrations as behaviour cloning needs them (spec §2.5–2.6), in memory.

:class:`BcData` holds the padded training subset in goal-interleaved order plus the reset
seeds of the two validation sets: ID (the last ``vlimit`` demos of each of the 24 training
goals) and OOD (the first ``tlimit`` demos of each of the 12 held-out goals).
:func:`load_bc_data` reads the HDF5 file of ``generate``; :func:`make_smoke_data` makes a
handful of bot demonstrations on the spot (``--smoke`` without ``--data``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from compkit_utils.errors import UserError

__all__ = ["BcData", "bot_demo", "load_bc_data", "make_smoke_data"]


@dataclasses.dataclass(frozen=True)
class BcData:
    """Padded demonstrations (N demos, Tmax steps) and the validation seeds.

    Attributes:
        images: ``[N, Tmax, 8, 8, 3]`` uint8 frames (zero padding).
        directions: ``[N, Tmax]`` agent directions (zero padding).
        actions: ``[N, Tmax]`` demonstrated actions (padding: any value).
        lengths: ``[N]`` valid steps T of each demo.
        missions: ``[N, 5]`` token ids.
        id_seeds: reset seeds of the ID-validation demos.
        ood_seeds: reset seeds of the OOD-validation demos.
        source: where the data came from (for messages).
    """

    images: np.ndarray
    directions: np.ndarray
    actions: np.ndarray
    lengths: np.ndarray
    missions: np.ndarray
    id_seeds: np.ndarray
    ood_seeds: np.ndarray
    source: str


def load_bc_data(path: Path, *, per_goal: int | None, vlimit: int, tlimit: int) -> BcData:
    """The training subset and validation seeds of a ``generate`` dataset (§2.6 subsets).

    Training: the first ``per_goal`` demos of every ID goal (default all but the last
    ``vlimit``), goal-interleaved. ID validation: the last ``vlimit`` demos of each ID goal.
    OOD validation: the first ``tlimit`` demos of each held-out goal
    (:func:`factored_attention_babyai.data.load_subsets`).

    Raises:
        UserError: a missing or corrupt dataset, or limits larger than the dataset holds.
    """
    from factored_attention_babyai.data import load_subsets

    subsets = load_subsets(path, limit=per_goal, vlimit=vlimit, tlimit=tlimit)
    if len(subsets.train) == 0:
        raise UserError(f"--data {path}: the training subset is empty; pass --per-goal 1 or more")
    a = subsets.train.arrays
    actions = np.asarray(a["action_trajectories"])
    return BcData(
        images=np.asarray(a["image_trajectories"], dtype=np.uint8),
        directions=np.asarray(a["direction_trajectories"], dtype=np.int64),
        actions=np.where(actions < 0, 0, actions).astype(np.int64),
        lengths=np.asarray(a["trajectory_lengths"], dtype=np.int64),
        missions=np.asarray(a["missions"], dtype=np.int64),
        id_seeds=subsets.id_valid.seeds.astype(np.int64),
        ood_seeds=subsets.ood_valid.seeds.astype(np.int64),
        source=f"{path}, {subsets.limit} per goal",
    )


def bot_demo(env: Any, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One full-visibility bot episode from ``seed``.

    Returns:
        ``(images [T, 8, 8, 3], directions [T], actions [T], tokens [5])`` — frames before
        each action, as §2.3 records them.
    """
    from factored_attention_babyai.env import FullyObservedBot

    obs, _ = env.reset(seed=seed)
    bot: Any = FullyObservedBot(env)
    images, directions, actions = [], [], []
    while True:
        action = int(bot.replan())
        images.append(obs["image"])
        directions.append(obs["direction"])
        actions.append(action)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    return (
        np.stack(images),
        np.asarray(directions, dtype=np.int64),
        np.asarray(actions, dtype=np.int64),
        np.asarray(obs["mission_tokens"], dtype=np.int64),
    )


def make_smoke_data(seed: int, *, vlimit: int = 1, tlimit: int = 1, demos: int = 16) -> BcData:
    """A few bot demonstrations of ID goals and validation seeds, made on the spot."""
    from factored_attention_babyai.env import make_env
    from factored_attention_babyai.evaluate import fresh_goal_seeds
    from factored_attention_babyai.vocab import ID_GOALS, OOD_GOALS, is_ood

    env = make_env()
    episodes = []
    s = 1_000 * seed + 1
    try:
        while len(episodes) < demos:
            if not is_ood(env.reset_layout(seed=s)):
                episodes.append(bot_demo(env, s))
            s += 1
    finally:
        env.close()
    tmax = max(len(e[2]) for e in episodes)
    n = len(episodes)
    images = np.zeros((n, tmax, 8, 8, 3), dtype=np.uint8)
    directions = np.zeros((n, tmax), dtype=np.int64)
    actions = np.zeros((n, tmax), dtype=np.int64)
    for i, (im, d, a, _) in enumerate(episodes):
        images[i, : len(a)], directions[i, : len(a)], actions[i, : len(a)] = im, d, a
    start = 2 * 10**9 + 1_000 * seed
    return BcData(
        images=images,
        directions=directions,
        actions=actions,
        lengths=np.asarray([len(e[2]) for e in episodes], dtype=np.int64),
        missions=np.stack([e[3] for e in episodes]),
        id_seeds=np.asarray(fresh_goal_seeds(ID_GOALS[:4], vlimit, start), dtype=np.int64),
        ood_seeds=np.asarray(fresh_goal_seeds(OOD_GOALS[:4], tlimit, start), dtype=np.int64),
        source=f"{n} bot demos made on the spot",
    )
