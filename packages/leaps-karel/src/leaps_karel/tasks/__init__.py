"""The six LEAPS tasks: initial-state generators, rewards and the return protocol.

``make(name, seed=…)`` builds a `Task` with a fixed set of seeded initial states;
``task.evaluate(program)`` computes the original's return (mean last-step reward over the
rollouts + 0.1 syntax bonus, 0.01 for invalid programs).
"""

from __future__ import annotations

from leaps_karel.tasks.base import (
    INVALID_RETURN,
    SYNTAX_BONUS,
    Options,
    Rollout,
    Task,
    TaskSpec,
)
from leaps_karel.tasks.registry import TASKS, describe, make

__all__ = [
    "INVALID_RETURN",
    "SYNTAX_BONUS",
    "TASKS",
    "Options",
    "Rollout",
    "Task",
    "TaskSpec",
    "describe",
    "make",
]
