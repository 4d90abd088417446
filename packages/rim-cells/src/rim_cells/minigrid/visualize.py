"""``rim-cells minigrid visualize``: one episode of a trained agent rendered into a GIF."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch

from compkit_utils.errors import UserError

if TYPE_CHECKING:
    from pathlib import Path

    from rim_cells.minigrid.config import MiniGridVisualizeConfig
    from rim_cells.minigrid.model import ActorCritic

_log = logging.getLogger(__name__)


def record_episode(
    model: ActorCritic,
    env_id: str,
    *,
    seed: int = 0,
    argmax: bool = False,
    max_steps: int | None = None,
    tile_size: int = 32,
    device: torch.device | str = "cpu",
) -> tuple[list[np.ndarray], float]:
    """Play one episode and render every state (``rgb_array``).

    Returns:
        ``(frames, episode return)``; frames are uint8 arrays (height, width, 3), the first
        one showing the initial state and one more after each action.
    """
    from rim_cells.minigrid.envs import make_env, preprocess_obs
    from rim_cells.minigrid.ppo import select_actions

    was_training = model.training
    model.eval()
    env = make_env(env_id, render_mode="rgb_array", tile_size=tile_size)
    try:
        obs, _ = env.reset(seed=seed)
        memory = model.initial_memory(1, device)
        frames = [np.asarray(env.render())]
        total, steps, done = 0.0, 0, False
        while not done and (max_steps is None or steps < max_steps):
            with torch.no_grad():
                logits, _, memory = model(preprocess_obs(obs[None], device), memory)
                action = int(select_actions(logits, argmax=argmax).item())
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            steps += 1
            done = bool(terminated or truncated)
            frames.append(np.asarray(env.render()))
    finally:
        env.close()
        model.train(was_training)
    return frames, total


def write_gif(frames: list[np.ndarray], path: Path, fps: float = 6.0) -> None:
    """Write RGB frames (H, W, 3) as a looping GIF, atomically."""
    from PIL import Image

    from compkit_utils.io import atomic_path

    if not frames:
        raise UserError(f"{path}: no frames to write")
    if fps <= 0:
        raise UserError(f"--fps must be positive, got {fps}")
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=round(1000 / fps),
            loop=0,
        )


def visualize(cfg: MiniGridVisualizeConfig) -> Path:
    """The ``rim-cells minigrid visualize`` command; returns the GIF path."""
    from compkit_utils.devices import pick_device
    from compkit_utils.seeding import seed_everything
    from rim_cells.minigrid.evaluate import load_agent

    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    model, train_cfg, _ = load_agent(cfg.checkpoint, device)
    env_id = cfg.env or train_cfg.env.env_id
    frames, total = record_episode(
        model,
        env_id,
        seed=cfg.seed,
        argmax=cfg.argmax,
        max_steps=cfg.max_steps,
        tile_size=cfg.tile_size,
        device=device,
    )
    write_gif(frames, cfg.out, cfg.fps)
    print(f"wrote {cfg.out}: {env_id}, {len(frames) - 1} steps, return {total:.3f}")
    return cfg.out
