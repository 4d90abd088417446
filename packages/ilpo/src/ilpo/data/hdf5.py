"""Demonstrations as HDF5: ``demonstrations.h5`` plus ``dataset_info.json`` (checksums).

Datasets (one row per transition): ``states`` and ``next_states`` ``(N, D)`` float32,
``actions``, ``episode_ids`` ``(N,)`` int64, ``terminated`` and ``truncated`` ``(N,)`` bool.
File attributes: ``env`` and ``format_version``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from compkit_utils.errors import UserError
from ilpo.data.transitions import Transitions

__all__ = ["HDF5_FILE", "read_hdf5", "schema", "write_demonstrations_hdf5"]

HDF5_FILE = "demonstrations.h5"


def schema() -> Any:
    """The :class:`~compkit_utils.datasets.hdf5.Schema` of ``demonstrations.h5``."""
    from compkit_utils.datasets.hdf5 import ArraySpec, Schema

    return Schema(
        {
            "states": ArraySpec("f", (None, None)),
            "next_states": ArraySpec("f", (None, None)),
            "actions": ArraySpec("i", (None,)),
            "episode_ids": ArraySpec("i", (None,)),
            "terminated": ArraySpec("b", (None,)),
            "truncated": ArraySpec("b", (None,)),
        },
        attrs=("env",),
    )


def write_demonstrations_hdf5(
    path: str | os.PathLike[str],
    transitions: Transitions,
    *,
    env: str,
    info: Any = None,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``transitions`` (which must hold actions and end flags) atomically."""
    from compkit_utils.datasets.hdf5 import write_hdf5

    if transitions.actions is None:
        raise ValueError("HDF5 demonstrations need actions")
    n = len(transitions)
    zeros = np.zeros(n, dtype=bool)
    arrays = {
        "states": transitions.states.astype(np.float32),
        "next_states": transitions.next_states.astype(np.float32),
        "actions": transitions.actions.astype(np.int64),
        "episode_ids": transitions.episode_ids.astype(np.int64),
        "terminated": zeros if transitions.terminated is None else transitions.terminated,
        "truncated": zeros if transitions.truncated is None else transitions.truncated,
    }
    return write_hdf5(
        path, arrays, attrs={"env": env, "format_version": 1, **(attrs or {})}, info=info
    )


def read_hdf5(
    path: str | os.PathLike[str], *, max_transitions: int | None = None
) -> tuple[Transitions, str]:
    """Read ``demonstrations.h5``; returns the transitions and the env id they came from.

    Raises:
        UserError: missing, unreadable or not of the expected layout (the message names the
            file and what is wrong).
    """
    from compkit_utils.datasets.hdf5 import validate_hdf5
    from compkit_utils.datasets.hdf5_schema import open_hdf5

    path = Path(path)
    validate_hdf5(path, schema())
    with open_hdf5(path) as handle:
        end = None if max_transitions is None else max_transitions
        data = {key: np.asarray(handle[key][:end]) for key in handle}
        env = handle.attrs["env"]
    env = env.decode() if isinstance(env, bytes) else str(env)
    if data["states"].shape != data["next_states"].shape:
        raise UserError(f"{path}: states and next_states differ in shape; regenerate it")
    if len(data["states"]) == 0:
        raise UserError(f"{path}: holds no transitions; regenerate it")
    transitions = Transitions(
        states=data["states"].astype(np.float32),
        next_states=data["next_states"].astype(np.float32),
        actions=data["actions"].astype(np.int64),
        episode_ids=data["episode_ids"].astype(np.int64),
        terminated=data["terminated"].astype(bool),
        truncated=data["truncated"].astype(bool),
        source=str(path),
    )
    return transitions, env
