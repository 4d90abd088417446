"""Evaluation of a trained MiniGrid agent, zero-shot on other (larger) environments."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from compkit_utils.errors import UserError

if TYPE_CHECKING:
    from rim_cells.minigrid.config import MiniGridEvaluateConfig, MiniGridTrainConfig
    from rim_cells.minigrid.model import ActorCritic

_log = logging.getLogger(__name__)


def load_agent(
    checkpoint: str | Path, device: torch.device | str = "cpu"
) -> tuple[ActorCritic, MiniGridTrainConfig, dict[str, Any]]:
    """Rebuild the actor-critic of a ``rim-cells minigrid train`` checkpoint.

    Returns:
        ``(model in eval mode, training config, checkpoint dictionary)``.

    Raises:
        UserError: the file is missing, unreadable, or not a MiniGrid training checkpoint.
    """
    from compkit_utils.checkpoints import load_checkpoint
    from compkit_utils.config import from_dict
    from rim_cells.config import upgrade_saved_config
    from rim_cells.minigrid.config import MiniGridTrainConfig
    from rim_cells.minigrid.model import ActorCritic

    state = load_checkpoint(checkpoint, map_location=device)
    if state.get("extra", {}).get("kind") != "minigrid-ppo":
        raise UserError(
            f"{checkpoint}: not a MiniGrid PPO checkpoint; pass a checkpoints/*.pt file "
            "written by `rim-cells minigrid train`"
        )
    saved = upgrade_saved_config(state["config"], total_hidden=True)
    cfg = from_dict(MiniGridTrainConfig, saved, source=f"{checkpoint} (config)")
    model = ActorCritic(cfg.model).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model, cfg, state


def evaluate_policy(
    model: ActorCritic,
    env_id: str,
    episodes: int,
    *,
    num_envs: int = 16,
    seed: int = 0,
    argmax: bool = False,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Run ``episodes`` episodes with the model (eval mode, memory reset at episode ends).

    Environment i of ``min(num_envs, episodes)`` parallel copies is seeded with
    ``seed + 10000·i``; the first ``episodes`` episodes to finish are counted.

    Returns:
        ``return_mean/std/min/max``, ``frames_mean/min/max`` (frames per episode) and
        ``episodes``.
    """
    from rim_cells.minigrid.envs import make_vector_env, preprocess_obs, reset_vector_env
    from rim_cells.minigrid.ppo import episode_stats, select_actions

    if episodes < 1:
        raise UserError(f"--episodes must be at least 1, got {episodes}")
    was_training = model.training
    model.eval()
    n = max(1, min(num_envs, episodes))
    envs = make_vector_env(env_id, n)
    try:
        obs = reset_vector_env(envs, seed)
        memory = model.initial_memory(n, device)
        episode_return = np.zeros(n)
        episode_frames = np.zeros(n, dtype=np.int64)
        returns: list[float] = []
        frames: list[int] = []
        while len(returns) < episodes:
            with torch.no_grad():
                logits, _, memory = model(preprocess_obs(obs, device), memory)
                action = select_actions(logits, argmax=argmax)
            obs, reward, terminated, truncated, _ = envs.step(action.cpu().numpy())
            done = np.logical_or(terminated, truncated)
            episode_return += reward
            episode_frames += 1
            for i in np.flatnonzero(done):
                returns.append(float(episode_return[i]))
                frames.append(int(episode_frames[i]))
            episode_return[done] = 0.0
            episode_frames[done] = 0
            keep = torch.as_tensor(1.0 - done, dtype=torch.float32, device=device)
            memory = memory * keep.unsqueeze(1)
    finally:
        envs.close()
        model.train(was_training)
    return episode_stats(returns[:episodes], frames[:episodes])


def format_table(rows: list[tuple[str, dict[str, float]]]) -> str:
    """Markdown table of evaluation results, one row per environment."""
    lines = [
        "| env | episodes | return mean | return std | return min | return max | frames/episode |",
        "|---|---|---|---|---|---|---|",
    ]
    for env_id, r in rows:
        lines.append(
            f"| {env_id} | {int(r['episodes'])} | {r['return_mean']:.3f} | {r['return_std']:.3f} "
            f"| {r['return_min']:.3f} | {r['return_max']:.3f} | {r['frames_mean']:.1f} |"
        )
    return "\n".join(lines)


def evaluate(cfg: MiniGridEvaluateConfig) -> list[tuple[str, dict[str, float]]]:
    """The ``rim-cells minigrid evaluate`` command: print a results table (and write JSON)."""
    from compkit_utils.devices import set_threads

    previous_threads = torch.get_num_threads()
    set_threads(cfg.threads)
    try:
        return _evaluate(cfg)
    finally:
        torch.set_num_threads(previous_threads)


def _evaluate(cfg: MiniGridEvaluateConfig) -> list[tuple[str, dict[str, float]]]:
    from compkit_utils.devices import pick_device
    from compkit_utils.io import atomic_write_json
    from compkit_utils.seeding import seed_everything
    from rim_cells.minigrid.config import zero_shot_envs

    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    model, train_cfg, state = load_agent(cfg.checkpoint, device)
    env_ids = cfg.env or zero_shot_envs(train_cfg.env.env_id)
    rows = []
    for env_id in env_ids:
        _log.info("evaluating %s on %s (%d episodes)", cfg.checkpoint, env_id, cfg.episodes)
        rows.append(
            (
                env_id,
                evaluate_policy(
                    model,
                    env_id,
                    cfg.episodes,
                    num_envs=cfg.num_envs,
                    seed=cfg.seed,
                    argmax=cfg.argmax,
                    device=device,
                ),
            )
        )
    memory = train_cfg.model.memory
    if memory == "rim":
        rim = train_cfg.model.rim
        memory = f"rim (k={rim.k_active} of {rim.num_units})"
    print(
        f"checkpoint {cfg.checkpoint}: {memory} memory, trained on {train_cfg.env.env_id} "
        f"for {state['extra'].get('env_steps', '?')} frames ({state['step']} updates); "
        f"{'argmax' if cfg.argmax else 'sampled'} actions, seed {cfg.seed}"
    )
    print(format_table(rows))
    if cfg.output is not None:
        atomic_write_json(
            cfg.output,
            {
                "checkpoint": str(cfg.checkpoint),
                "argmax": cfg.argmax,
                "seed": cfg.seed,
                "results": {env_id: r for env_id, r in rows},
            },
        )
    return rows
