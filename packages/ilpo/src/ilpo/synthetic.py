"""A deterministic toy system s' = s + c_a for tests and benchmarks.

State: 3 floats. Actions: 3, each adding a fixed shift c_a. The demonstrator raises the smallest
coordinate (a = argmin_i s_i); the reward is 1 when the action taken is that one. Episodes last
``horizon`` steps. The environment follows gymnasium's API, so the online stage runs on it as on
CartPole.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from numpy.typing import NDArray

SHIFTS = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.5]], dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class SyntheticTransitions:
    """Transitions of the toy system with their true actions."""

    states: torch.Tensor  # [N, 3]
    actions: torch.Tensor  # [N] int64
    next_states: torch.Tensor  # [N, 3]


def expert_action(s: NDArray[np.floating[Any]]) -> int:
    """The demonstrator's action: raise the smallest coordinate."""
    return int(np.argmin(s))


def synthetic_transitions(n: int, seed: int = 0, expert_prob: float = 0.0) -> SyntheticTransitions:
    """``n`` transitions from uniform states in [−1, 1]³.

    The action is the demonstrator's with probability ``expert_prob``, else uniform.
    """
    rng = np.random.default_rng(seed)
    states = rng.uniform(-1, 1, size=(n, 3)).astype(np.float32)
    actions = rng.integers(0, len(SHIFTS), size=n)
    greedy = rng.random(n) < expert_prob
    actions[greedy] = np.argmin(states[greedy], axis=1)
    next_states = states + SHIFTS[actions]
    return SyntheticTransitions(
        torch.from_numpy(states),
        torch.from_numpy(actions.astype(np.int64)),
        torch.from_numpy(next_states),
    )


class ShiftEnv(gym.Env[NDArray[np.float32], np.int64]):
    """gymnasium environment for s' = s + c_a with reward 1 for the demonstrator's action."""

    def __init__(self, horizon: int = 20) -> None:
        self.horizon = horizon
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(len(SHIFTS))
        self._s = np.zeros(3, dtype=np.float32)
        self._t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        super().reset(seed=seed)
        self._s = self.np_random.uniform(-1, 1, size=3).astype(np.float32)
        self._t = 0
        return self._s.copy(), {}

    def step(
        self, action: np.int64 | int
    ) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        a = int(action)
        reward = 1.0 if a == expert_action(self._s) else 0.0
        self._s = (self._s + SHIFTS[a]).astype(np.float32)
        self._t += 1
        return self._s.copy(), reward, False, self._t >= self.horizon, {}
