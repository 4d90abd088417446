"""Gymnasium environments for the six LEAPS tasks.

Importing this module registers ``compkit/Karel-<Task>-v0`` for every task (``StairClimber``,
``FourCorner``, ``TopOff``, ``Maze``, ``CleanHouse``, ``Harvester``)::

    import gymnasium
    import leaps_karel.envs  # noqa: F401  (registers the ids)

    env = gymnasium.make("compkit/Karel-Maze-v0")

An installed leaps-karel also registers them without that import: its start-up file
(``leaps_karel_gymnasium.pth``, gymnasium 1.x has no plugin entry points) registers this module
with :mod:`compkit_utils.gym_hook`, which imports it as soon as a program imports gymnasium.
``gymnasium.make("leaps_karel.envs:compkit/Karel-Maze-v0")`` works too (gymnasium imports
the module named before the colon).

Rendering: ``render_mode="rgb_array"`` returns an ``(H * 32 + 1, W * 32 + 1, 3)`` uint8 frame
drawn by :func:`leaps_karel.render.render_image`; ``"ansi"`` returns the ASCII grid.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from leaps_karel.tasks.base import Options
from leaps_karel.tasks.registry import TASKS, get_spec
from leaps_karel.world import ACTION_NAMES, NUM_CHANNELS, World

#: Gymnasium id part of each task (``TaskSpec.env_name``, from the task registry).
ENV_NAMES = {name: spec.env_name for name, spec in TASKS.items()}
#: Side of a grid cell in pixels of an ``rgb_array`` frame.
RENDER_CELL = 32
#: Default episode horizon (the original's programs are stopped by the 220-call budget, which
#: allows at most 217 actions).
DEFAULT_MAX_STEPS = 220


class KarelEnv(gymnasium.Env[np.ndarray, np.int64]):
    """One LEAPS task as a step-by-step environment.

    Description:
        The agent acts directly with Karel actions on a task world; each reset draws a new
        initial world from the task's generator (seeded through ``reset(seed=...)``).

    Observation:
        ``MultiBinary((H, W, 16))`` int8, the original's state tensor (channel-last): channels
        0–3 agent facing N/E/S/W, 4 wall, 5 + k cell holds k markers.

    Actions:
        ``Discrete(5)``: 0 move, 1 turnLeft, 2 turnRight, 3 pickMarker, 4 putMarker (no-crash
        semantics: a blocked move turns the agent around, failing marker actions do nothing).

    Rewards:
        ``reward_mode="delta"`` (default): the change of the task reward (spec §10) caused by the
        action, so an episode's return equals the task reward of its final state minus that of
        the initial state (0 for every task but TOPOFF). ``reward_mode="state"``: the task
        reward itself after every action (what the program evaluation scores on its last step).
        ``info["task_reward"]`` always holds the task reward.

    Termination:
        ``terminated`` when the task is solved (task reward 1); ``truncated`` after
        ``max_steps`` actions.

    Configurations:
        ``task`` (name), ``max_steps``, ``reward_mode``, ``options`` (`Options`; defaults =
        the original's quirks).
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}  # noqa: RUF012

    def __init__(
        self,
        task: str = "maze",
        max_steps: int = DEFAULT_MAX_STEPS,
        reward_mode: str = "delta",
        options: Options | None = None,
        render_mode: str | None = None,
    ) -> None:
        self.spec_task = get_spec(task)
        self.options = options or Options()
        if reward_mode not in ("delta", "state"):
            raise ValueError(f"reward_mode must be 'delta' or 'state', got {reward_mode!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            modes = ", ".join(repr(m) for m in self.metadata["render_modes"])
            raise ValueError(f"render_mode must be None, {modes}; got {render_mode!r}")
        self.reward_mode = reward_mode
        self.render_mode = render_mode
        self.max_steps = max_steps
        h, w = self.spec_task.height, self.spec_task.width
        self.observation_space = spaces.MultiBinary((h, w, NUM_CHANNELS))
        self.action_space = spaces.Discrete(len(ACTION_NAMES))
        self.world: World | None = None
        self._ctx: dict[str, Any] = {}
        self._total = 0
        self._last_reward = 0.0
        self._steps = 0

    def _obs(self) -> np.ndarray:
        assert self.world is not None
        return self.world.to_tensor().astype(np.int8)

    def _info(self) -> dict[str, Any]:
        assert self.world is not None
        return {
            "task_reward": self._last_reward,
            "perception": np.asarray(self.world.perception(), dtype=bool),
            "agent": self.world.agent,
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw a new initial world (``options={"world": World}`` sets one explicitly)."""
        super().reset(seed=seed)
        if options and "world" in options:
            world = options["world"].copy()
        else:
            world = self.spec_task.generate(self.np_random, self.options)
        self.world = world
        self._ctx = self.spec_task.context(world, self.options)
        self._total = sum(world.markers)
        self._last_reward = self.spec_task.reward(dict(self._ctx), world, self._total)
        self._steps = 0
        return self._obs(), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.world is None:
            raise RuntimeError("call reset() before step()")
        a = int(action)
        if not 0 <= a < len(ACTION_NAMES):
            raise ValueError(f"action must be in 0..4, got {action!r}")
        self.world.step(a)
        new_total = sum(self.world.markers)
        total = self._total if self.options.marker_total_lag else new_total
        reward = self.spec_task.reward(self._ctx, self.world, total)
        self._total = new_total
        out = reward - self._last_reward if self.reward_mode == "delta" else reward
        self._last_reward = reward
        self._steps += 1
        terminated = reward >= 1.0
        truncated = not terminated and self._steps >= self.max_steps
        return self._obs(), float(out), terminated, truncated, self._info()

    def render(self) -> str | np.ndarray | None:  # type: ignore[override]
        """The current world as ASCII text or an RGB frame.

        Returns:
            ``"ansi"``: the ASCII grid; ``"rgb_array"``: an ``(H * 32 + 1, W * 32 + 1, 3)``
            uint8 frame (cells and grid lines); ``None`` without a render mode or before `reset`.
        """
        if self.world is None or self.render_mode is None:
            return None
        if self.render_mode == "ansi":
            return self.world.render_ascii()
        from leaps_karel.render import render_image

        image = render_image(self.world, cell=RENDER_CELL).convert("RGB")
        return np.asarray(image, dtype=np.uint8)


def env_id(task: str) -> str:
    """The gymnasium id of a task, e.g. ``compkit/Karel-Maze-v0``."""
    return f"compkit/Karel-{get_spec(task).env_name}-v0"


def register_envs() -> None:
    """Register ``compkit/Karel-<Task>-v0`` for the six tasks (idempotent)."""
    for name in TASKS:
        eid = env_id(name)
        if eid in gymnasium.registry:
            continue
        gymnasium.register(
            id=eid,
            entry_point="leaps_karel.envs:KarelEnv",
            kwargs={"task": name},
            max_episode_steps=None,
        )


register_envs()
