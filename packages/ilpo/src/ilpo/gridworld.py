"""The image domain: a MiniGrid navigation task seen as 128×128 RGB frames, and its expert.

CoinRun (the paper's image task) cannot be installed on Python ≥ 3.11 and its demonstrations
were never released, so the image pipeline runs on MiniGrid rooms instead (a new experiment,
not a reproduction). The agent has the 3 actions of the original's AI2-THOR task style:
``0`` turn left, ``1`` turn right, ``2`` forward. Observations are the full top-down render
(no view-cone highlight) resized with bilinear interpolation to 128×128, as ``uint8 (128, 128,
3)``. The reward is MiniGrid's: ``1 − 0.9 · steps / max_steps`` on reaching the goal, else 0.

The expert is a breadth-first search over (cell, direction) states: it takes a first action
of a shortest path to the goal.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np

from compkit_utils.errors import UserError
from ilpo.config import IMAGE_ENVS

__all__ = [
    "FRAME",
    "IMAGE_ENVS",
    "N_ACTIONS",
    "FrameEnv",
    "bfs_action",
    "is_image_env",
    "make_image_env",
]

FRAME = 128
N_ACTIONS = 3
TILE = 32  # render tile size in pixels, before the resize to 128×128
_DIRS = ((1, 0), (0, 1), (-1, 0), (0, -1))  # MiniGrid's agent_dir 0..3 as (dx, dy)


def is_image_env(env_id: str) -> bool:
    """Whether ``env_id`` is one of :data:`IMAGE_ENVS`."""
    return env_id in IMAGE_ENVS


class FrameEnv(gym.Wrapper):  # type: ignore[type-arg]
    """Observations = ``uint8 (128, 128, 3)`` renders; actions = left, right, forward."""

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Box(0, 255, (FRAME, FRAME, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(N_ACTIONS)

    def frame(self) -> np.ndarray:
        """The current top-down render, resized to ``(128, 128, 3)`` uint8."""
        from PIL import Image

        rgb = self.env.unwrapped.get_frame(highlight=False, tile_size=TILE)  # type: ignore[attr-defined]
        if rgb.shape[:2] != (FRAME, FRAME):
            image = Image.fromarray(rgb).resize((FRAME, FRAME), Image.Resampling.BILINEAR)
            rgb = np.asarray(image)
        return np.ascontiguousarray(rgb, dtype=np.uint8)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        _, info = self.env.reset(**kwargs)
        return self.frame(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        _, reward, terminated, truncated, info = self.env.step(int(action))
        return self.frame(), float(reward), bool(terminated), bool(truncated), info


def make_image_env(env_id: str) -> Any:
    """A MiniGrid env of :data:`IMAGE_ENVS` with 128×128 RGB observations and 3 actions."""
    if not is_image_env(env_id):
        raise UserError(f"unknown image environment {env_id!r}; use one of {', '.join(IMAGE_ENVS)}")
    import minigrid  # noqa: F401  (registers the MiniGrid ids)

    return FrameEnv(gym.make(env_id))


def bfs_action(env: Any) -> int:
    """First action of a shortest path to the goal (0 left, 1 right, 2 forward).

    Breadth-first search over (x, y, direction) from the agent's current state on the
    unwrapped MiniGrid env; walls block, other cells are passable. Returns 2 when the goal
    cannot be reached (it never happens in the rooms of :data:`IMAGE_ENVS`).
    """
    grid = env.unwrapped.grid
    start = (int(env.unwrapped.agent_pos[0]), int(env.unwrapped.agent_pos[1]))
    start_dir = int(env.unwrapped.agent_dir)
    goal = None
    for x in range(grid.width):
        for y in range(grid.height):
            cell = grid.get(x, y)
            if cell is not None and cell.type == "goal":
                goal = (x, y)
    if goal is None or start == goal:
        return 2

    def passable(x: int, y: int) -> bool:
        cell = grid.get(x, y)
        return cell is None or bool(cell.can_overlap())

    first: dict[tuple[int, int, int], int] = {}
    queue: deque[tuple[int, int, int]] = deque()
    origin = (*start, start_dir)
    first[origin] = -1
    queue.append(origin)
    while queue:
        x, y, d = queue.popleft()
        dx, dy = _DIRS[d]
        moves = [(0, (x, y, (d - 1) % 4)), (1, (x, y, (d + 1) % 4))]
        if passable(x + dx, y + dy):
            moves.append((2, (x + dx, y + dy, d)))
        for action, nxt in moves:
            if nxt in first:
                continue
            first[nxt] = action if first[(x, y, d)] < 0 else first[(x, y, d)]
            if nxt[:2] == goal:
                return first[nxt]
            queue.append(nxt)
    return 2
