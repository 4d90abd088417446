"""``ilpo collect``: demonstrations from the noisy demonstrator (as the original collected them).

At every step the demonstrator takes the expert's greedy action with probability
``greedy_prob`` (0.75) and a uniformly random action otherwise. Whole episodes are rolled
out on one (non-vectorised) env until at least ``transitions`` steps; every transition is
kept, including the last of each episode. The run directory gets:

* ``<env>/<env>.txt``: state-only lines ``[s] [s']`` (ILPO, BCO);
* ``<env>_bc/<env>_bc.txt``: BC lines ``[s] [a] [s']`` (the executed action);
* ``demonstrations.h5``: states, actions, next states, episode ids, terminated, truncated;
* ``dataset_info.json``: provenance and the SHA-256 of the three files;
* ``metrics.jsonl``: the demonstrator's mean return (the paper's "Expert" line).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ilpo.data.transitions import Transitions
from ilpo.experts import EXPERT_FILE, META_FILE, Policy, load_expert, make_env

if TYPE_CHECKING:
    from ilpo.config import CollectConfig

__all__ = ["collect", "noisy_rollouts", "text_paths"]


def text_paths(run_dir: str | os.PathLike[str], env: str) -> tuple[Path, Path]:
    """The state-only and the BC text files of a collect run, as the original names them."""
    root = Path(run_dir)
    return root / env / f"{env}.txt", root / f"{env}_bc" / f"{env}_bc.txt"


def noisy_rollouts(
    policy: Policy,
    env_id: str,
    transitions: int,
    *,
    greedy_prob: float = 0.75,
    seed: int = 0,
    on_step: Callable[[int], object] | None = None,
) -> tuple[Transitions, list[float]]:
    """Roll out whole episodes of the noisy demonstrator until ``transitions`` steps.

    Returns:
        The transitions (with actions, episode ids and end flags) and every episode's return.
    """
    env = make_env(env_id)
    rng = np.random.default_rng(seed)
    num_actions = int(env.action_space.n)  # type: ignore[attr-defined]
    states: list[np.ndarray] = []
    next_states: list[np.ndarray] = []
    actions: list[int] = []
    episode_ids: list[int] = []
    terminated_flags: list[bool] = []
    truncated_flags: list[bool] = []
    returns: list[float] = []
    try:
        episode = 0
        while len(states) < transitions:
            obs, _ = env.reset(seed=seed + episode)
            total, done = 0.0, False
            while not done:
                if rng.random() < greedy_prob:
                    action = policy(obs)
                else:
                    action = int(rng.integers(num_actions))
                next_obs, reward, terminated, truncated, _ = env.step(action)
                states.append(np.asarray(obs, dtype=np.float32))
                next_states.append(np.asarray(next_obs, dtype=np.float32))
                actions.append(action)
                episode_ids.append(episode)
                terminated_flags.append(bool(terminated))
                truncated_flags.append(bool(truncated))
                total += float(reward)
                done = bool(terminated or truncated)
                obs = next_obs
                if on_step is not None:
                    on_step(len(states))
            returns.append(total)
            episode += 1
    finally:
        env.close()
    data = Transitions(
        states=np.stack(states),
        next_states=np.stack(next_states),
        actions=np.asarray(actions, dtype=np.int64),
        episode_ids=np.asarray(episode_ids, dtype=np.int64),
        terminated=np.asarray(terminated_flags, dtype=bool),
        truncated=np.asarray(truncated_flags, dtype=bool),
        source=f"<{env_id} demonstrator>",
    )
    return data, returns


def _newest_smoke_expert(runs_dir: Path | None) -> Path | None:
    from compkit_utils.runs import run_root

    root = run_root("ilpo", runs_dir)
    found = []
    for run in root.glob("expert__*"):
        config = run / "config.json"
        if not ((run / EXPERT_FILE).is_file() and (run / META_FILE).is_file()):
            continue
        try:
            data = json.loads(config.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("smoke") is True:
            found.append((run.stat().st_mtime, run))
    return max(found)[1] if found else None


def _smoke_expert(cfg: CollectConfig) -> Path:
    from ilpo.config import ExpertConfig
    from ilpo.experts import train_expert

    found = _newest_smoke_expert(cfg.runs_dir)
    if found is not None:
        return found
    print("collect --smoke: no smoke expert in the runs root; training one (ilpo expert --smoke)")
    expert_cfg = dataclasses.replace(
        ExpertConfig.smoke_defaults(), seed=cfg.seed, runs_dir=cfg.runs_dir
    )
    return train_expert(expert_cfg)


def collect(cfg: CollectConfig) -> Path:
    """Run ``ilpo collect``; returns the run directory."""
    from compkit_utils.datasets.info import DatasetInfo, write_info
    from compkit_utils.devices import set_threads
    from compkit_utils.logging import RunLogger, progress
    from compkit_utils.runs import open_run, write_config
    from ilpo import __version__
    from ilpo.data.hdf5 import HDF5_FILE, write_demonstrations_hdf5
    from ilpo.data.text import write_text_file

    if cfg.env is not None:
        from ilpo.collect_images import collect_images

        return collect_images(cfg)
    expert_path = cfg.expert if cfg.expert is not None else _smoke_expert(cfg)
    policy, env_id = load_expert(expert_path)  # a bad --expert fails before anything is made
    set_threads(cfg.threads)
    n = cfg.transitions or 50_000
    with open_run(
        "ilpo", "collect", seed=cfg.seed, runs_dir=cfg.runs_dir, run_name=cfg.run_name
    ) as run:
        write_config(run.path, cfg, "ilpo")
        bar = progress(range(n), total=n, desc="collect")
        data, returns = noisy_rollouts(
            policy,
            env_id,
            n,
            greedy_prob=cfg.greedy_prob,
            seed=cfg.seed,
            on_step=lambda _n: next(bar, None),
        )
        states_file, bc_file = text_paths(run.path, env_id)
        write_text_file(states_file, data.states, data.next_states)
        write_text_file(bc_file, data.states, data.next_states, data.actions)
        mean, std = float(np.mean(returns)), float(np.std(returns))
        info = DatasetInfo(
            name=f"ilpo-demonstrations-{env_id}",
            generator="ilpo.collect",
            version=__version__,
            seed=cfg.seed,
            counts={"transitions": len(data), "episodes": len(returns)},
            extra={
                "env": env_id,
                "expert": str(Path(expert_path).resolve()),
                "greedy_prob": cfg.greedy_prob,
                "demonstrator_return_mean": mean,
                "demonstrator_return_std": std,
            },
        )
        write_demonstrations_hdf5(
            run.path / HDF5_FILE,
            data,
            env=env_id,
            attrs={"greedy_prob": cfg.greedy_prob, "demonstrator_return_mean": mean},
        )
        files = [HDF5_FILE, *(str(p.relative_to(run.path)) for p in (states_file, bc_file))]
        write_info(run.path, info, files=files)
        with RunLogger(run.path, console_every=0, package="ilpo") as logger:
            logger.log(
                len(data),
                {
                    "demonstrator/return_mean": mean,
                    "demonstrator/return_std": std,
                    "demonstrator/episodes": len(returns),
                    "demonstrator/transitions": len(data),
                },
            )
        print(
            f"demonstrator ({cfg.greedy_prob:.0%} expert) on {env_id}: return {mean:.2f} ± "
            f"{std:.2f} over {len(returns)} episodes; {len(data)} transitions in {run.path}"
        )
    return run.path
