"""``ilpo inspect``: read a dataset with the package's readers and print a summary."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ilpo.data import load_transitions
from ilpo.data.images import list_image_files, load_image_pairs

if TYPE_CHECKING:
    from ilpo.config import InspectConfig

__all__ = ["inspect"]


def inspect(cfg: InspectConfig) -> str:
    """Run ``ilpo inspect``; returns (and prints) the summary line."""
    from ilpo.config import IMAGE_ENVS
    from ilpo.data.frames import FRAMES_FILE, load_frames

    path = cfg.data
    if cfg.env in IMAGE_ENVS or (path / FRAMES_FILE).is_file() or path.name == FRAMES_FILE:
        frames = load_frames(path, max_pairs=cfg.max_transitions, env=cfg.env)
        line = f"{frames.source}: {len(frames)} frame pairs of 128×128×3"
        if frames.env is not None:
            line += f" from {frames.env}"
    elif path.is_dir() and not any(path.glob("*.txt")) and list_image_files(path):
        pairs = load_image_pairs(path, max_pairs=cfg.max_transitions)
        line = f"{path}: {len(pairs)} image pairs of 3×128×128 frames"
    else:
        data = load_transitions(
            path, kind=cfg.kind, max_transitions=cfg.max_transitions, env=cfg.env
        )
        with_actions = data.actions is not None
        form = "[s] [a] [s'] (with actions)" if with_actions else "[s] [s'] (state-only)"
        line = (
            f"{data.source}: {len(data)} transitions {form}, state dim {data.state_dim}, "
            f"{data.num_episodes} episodes"
        )
        if data.actions is not None:
            counts = np.bincount(data.actions)
            line += ", action counts " + "/".join(str(int(c)) for c in counts)
        if cfg.env is not None:
            line += f"; fits {cfg.env}"
    print(line)
    return line
