"""``ilpo collect --env <image env>``: frame demonstrations of the MiniGrid task.

The noisy demonstrator takes the shortest-path (BFS) expert's action with probability
``greedy_prob`` (0.75) and a uniformly random one of the 3 actions otherwise, in whole
episodes (reset seeds ``seed, seed+1, ...``). The run directory gets:

* ``<env>/<index>.png``: the original's image format, ``[A | B]`` (frame t | frame t+1),
  each 128×128, so 256 wide and 128 high;
* ``<env>_actions/<index>.txt``: the executed action of each pair (image BC labels);
* ``frames.h5``: states, next states (uint8 frames), actions, episode ids, end flags;
* ``dataset_info.json`` and ``metrics.jsonl`` (the demonstrator's return, and the clean
  expert's over 20 held-out episodes).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ilpo.gridworld import N_ACTIONS, bfs_action, make_image_env

if TYPE_CHECKING:
    from ilpo.config import CollectConfig

__all__ = ["DEFAULT_IMAGE_TRANSITIONS", "collect_images", "expert_return", "frame_rollouts"]

DEFAULT_IMAGE_TRANSITIONS = 5_000
EXPERT_EPISODES = 20
HELDOUT_SEED = 1_000_000


def frame_rollouts(
    env_id: str,
    transitions: int,
    *,
    greedy_prob: float = 0.75,
    seed: int = 0,
    on_step: Callable[[int], object] | None = None,
) -> tuple[dict[str, np.ndarray], list[float]]:
    """Whole episodes of the noisy BFS demonstrator until ``transitions`` steps.

    Returns:
        Arrays ``states``, ``next_states`` uint8 ``(N, 128, 128, 3)``, ``actions``,
        ``episode_ids`` ``(N,)`` int64, ``terminated``, ``truncated`` ``(N,)`` bool, and every
        episode's return.
    """
    env = make_image_env(env_id)
    rng = np.random.default_rng(seed)
    rows: dict[str, list[Any]] = {k: [] for k in ("s", "n", "a", "e", "te", "tr")}
    returns: list[float] = []
    try:
        episode = 0
        while len(rows["s"]) < transitions:
            obs, _ = env.reset(seed=seed + episode)
            total, done = 0.0, False
            while not done:
                if rng.random() < greedy_prob:
                    action = bfs_action(env)
                else:
                    action = int(rng.integers(N_ACTIONS))
                nxt, reward, terminated, truncated, _ = env.step(action)
                for key, value in zip(
                    ("s", "n", "a", "e", "te", "tr"),
                    (obs, nxt, action, episode, terminated, truncated),
                    strict=True,
                ):
                    rows[key].append(value)
                total += float(reward)
                done = bool(terminated or truncated)
                obs = nxt
                if on_step is not None:
                    on_step(len(rows["s"]))
            returns.append(total)
            episode += 1
    finally:
        env.close()
    arrays = {
        "states": np.stack(rows["s"]),
        "next_states": np.stack(rows["n"]),
        "actions": np.asarray(rows["a"], dtype=np.int64),
        "episode_ids": np.asarray(rows["e"], dtype=np.int64),
        "terminated": np.asarray(rows["te"], dtype=bool),
        "truncated": np.asarray(rows["tr"], dtype=bool),
    }
    return arrays, returns


def expert_return(env_id: str, episodes: int, seed: int) -> tuple[float, float]:
    """Mean and std return of the clean BFS expert over held-out reset seeds."""
    env = make_image_env(env_id)
    returns = []
    try:
        for i in range(episodes):
            env.reset(seed=HELDOUT_SEED + 1000 * seed + i)
            total, done = 0.0, False
            while not done:
                _, reward, terminated, truncated, _ = env.step(bfs_action(env))
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return float(np.mean(returns)), float(np.std(returns))


def _write_pngs(run: Path, env_id: str, arrays: dict[str, np.ndarray]) -> None:
    """``<env>/<i>.png`` (``[A | B]``) and ``<env>_actions/<i>.txt``, written in place.

    No per-file atomic rename (thousands of small files): the whole run directory is
    removed if the command fails before it finishes.
    """
    from PIL import Image

    pngs, labels = run / env_id, run / f"{env_id}_actions"
    pngs.mkdir()
    labels.mkdir()
    for i, (a, b, act) in enumerate(
        zip(arrays["states"], arrays["next_states"], arrays["actions"], strict=True)
    ):
        Image.fromarray(np.concatenate([a, b], axis=1)).save(pngs / f"{i}.png", format="PNG")
        (labels / f"{i}.txt").write_text(f"{int(act)}\n")


def collect_images(cfg: CollectConfig) -> Path:
    """Run ``ilpo collect --env <image env>``; returns the run directory."""
    from compkit_utils.datasets.info import DatasetInfo, write_info
    from compkit_utils.logging import RunLogger, progress
    from compkit_utils.runs import open_run, write_config
    from ilpo import __version__
    from ilpo.data.frames import FRAMES_FILE, write_frames_hdf5

    assert cfg.env is not None
    env_id = cfg.env
    n = cfg.transitions or DEFAULT_IMAGE_TRANSITIONS
    with open_run(
        "ilpo", "collect", seed=cfg.seed, runs_dir=cfg.runs_dir, run_name=cfg.run_name
    ) as run:
        write_config(run.path, cfg, "ilpo")
        bar = progress(range(n), total=n, desc="collect")
        arrays, returns = frame_rollouts(
            env_id, n, greedy_prob=cfg.greedy_prob, seed=cfg.seed, on_step=lambda _: next(bar, None)
        )
        _write_pngs(run.path, env_id, arrays)
        write_frames_hdf5(run.path / FRAMES_FILE, arrays, env=env_id)
        mean, std = float(np.mean(returns)), float(np.std(returns))
        clean = expert_return(env_id, EXPERT_EPISODES, cfg.seed)
        info = DatasetInfo(
            name=f"ilpo-frames-{env_id}",
            generator="ilpo.collect_images",
            version=__version__,
            seed=cfg.seed,
            counts={"transitions": len(arrays["actions"]), "episodes": len(returns)},
            extra={
                "env": env_id,
                "expert": "bfs",
                "greedy_prob": cfg.greedy_prob,
                "demonstrator_return_mean": mean,
                "demonstrator_return_std": std,
                "png_folder": env_id,
                "actions_folder": f"{env_id}_actions",
            },
        )
        write_info(run.path, info, files=[FRAMES_FILE])
        with RunLogger(run.path, console_every=0, package="ilpo") as logger:
            logger.log(
                len(arrays["actions"]),
                {
                    "demonstrator/return_mean": mean,
                    "demonstrator/return_std": std,
                    "demonstrator/episodes": len(returns),
                    "demonstrator/transitions": len(arrays["actions"]),
                    "expert/return_mean": clean[0],
                    "expert/return_std": clean[1],
                    "expert/episodes": EXPERT_EPISODES,
                },
            )
        print(
            f"demonstrator ({cfg.greedy_prob:.0%} BFS expert) on {env_id}: return {mean:.3f} ± "
            f"{std:.3f} over {len(returns)} episodes (clean expert {clean[0]:.3f}); "
            f"{len(arrays['actions'])} frame pairs in {run.path}"
        )
    return run.path
