"""The in-memory form of a demonstration dataset: :class:`Transitions`."""

from __future__ import annotations

import dataclasses

import numpy as np

from compkit_utils.errors import UserError

__all__ = ["MAX_TRANSITIONS", "Transitions", "episode_ids_from_continuity"]

MAX_TRANSITIONS = 50_000
"""The original loader uses at most this many transitions of a dataset."""


@dataclasses.dataclass(frozen=True)
class Transitions:
    """Demonstration transitions ``(s, [a,] s')`` as NumPy arrays, one row per transition.

    Attributes:
        states: ``s_t``, shape ``(N, D)``, float32.
        next_states: ``s_{t+1}``, shape ``(N, D)``, float32.
        actions: the executed actions ``(N,)`` int64, or ``None`` for state-only data.
        episode_ids: episode index of each transition ``(N,)`` int64 (for the text format,
            which has no separators, inferred: a new episode starts where ``s_t`` differs
            from the previous ``s'``).
        terminated: whether the episode terminated at this transition, or ``None``.
        truncated: whether it was cut by the time limit here, or ``None``.
        source: where the data came from (for error messages).
    """

    states: np.ndarray
    next_states: np.ndarray
    actions: np.ndarray | None
    episode_ids: np.ndarray
    terminated: np.ndarray | None = None
    truncated: np.ndarray | None = None
    source: str = "<memory>"

    def __post_init__(self) -> None:
        n = len(self.states)
        if self.states.ndim != 2 or self.next_states.shape != self.states.shape:
            raise ValueError(
                f"states {self.states.shape} and next_states {self.next_states.shape} must "
                "both be (N, D)"
            )
        for name in ("actions", "episode_ids", "terminated", "truncated"):
            value = getattr(self, name)
            if value is not None and value.shape != (n,):
                raise ValueError(f"{name} has shape {value.shape}, expected ({n},)")

    def __len__(self) -> int:
        return len(self.states)

    @property
    def state_dim(self) -> int:
        """D, the state dimension."""
        return int(self.states.shape[1])

    @property
    def num_episodes(self) -> int:
        """Number of distinct episodes."""
        return len(np.unique(self.episode_ids))

    def check_state_dim(self, dim: int, env: str) -> None:
        """Raise :class:`UserError` unless the states have ``dim`` entries (``env``'s)."""
        if self.state_dim != dim:
            raise UserError(
                f"{self.source}: states have {self.state_dim} entries but {env} observations "
                f"have {dim}; pass demonstrations recorded on {env}"
            )

    def check_actions(self, num_actions: int, env: str) -> None:
        """Raise :class:`UserError` unless every action is in ``0..num_actions-1``."""
        if self.actions is None:
            raise UserError(
                f"{self.source} holds no actions; pass a BC dataset ([s] [a] [s'] lines or "
                "an HDF5 file from `ilpo collect`)"
            )
        bad = (self.actions < 0) | (self.actions >= num_actions)
        if bad.any():
            value = int(self.actions[np.argmax(bad)])
            raise UserError(
                f"{self.source}: action {value} is not one of {env}'s {num_actions} actions"
            )

    def without_actions(self) -> Transitions:
        """The same transitions, state-only."""
        return dataclasses.replace(self, actions=None)


def episode_ids_from_continuity(states: np.ndarray, next_states: np.ndarray) -> np.ndarray:
    """Episode index per row: a new episode starts where ``s_t != s'_{t-1}``."""
    if len(states) == 0:
        return np.zeros(0, dtype=np.int64)
    breaks = np.any(states[1:] != next_states[:-1], axis=1)
    return np.concatenate([[0], np.cumsum(breaks)]).astype(np.int64)
