"""Demonstration datasets: the original's text and image formats, and HDF5.

:func:`load_transitions` reads vector demonstrations from any of them:

* a folder of ``*.txt`` files (or one ``.txt`` file) in the original's format
  (:mod:`ilpo.data.text`);
* a ``.h5`` file written by ``ilpo collect``, or a folder holding ``demonstrations.h5``
  (:mod:`ilpo.data.hdf5`).

Image datasets (folders of ``[A | B]`` PNG pairs) are read by
:func:`ilpo.data.images.load_image_pairs`.
"""

from __future__ import annotations

import os
from pathlib import Path

from compkit_utils.errors import UserError
from ilpo.data.hdf5 import HDF5_FILE, read_hdf5
from ilpo.data.text import TextKind, read_text_folder
from ilpo.data.transitions import MAX_TRANSITIONS, Transitions

__all__ = [
    "MAX_TRANSITIONS",
    "TextKind",
    "Transitions",
    "check_matches_env",
    "load_transitions",
]


def load_transitions(
    path: str | os.PathLike[str],
    *,
    kind: TextKind = "auto",
    max_transitions: int | None = MAX_TRANSITIONS,
    env: str | None = None,
) -> Transitions:
    """Load vector demonstrations from a text folder, a ``.txt`` file or an HDF5 file.

    Args:
        path: a folder of ``*.txt`` files, a ``.txt`` file, a ``.h5`` file, or a folder
            holding ``demonstrations.h5``.
        kind: ``states`` (ILPO, BCO: state-only; text BC files are an error, HDF5 actions
            are dropped), ``bc`` (actions required), or ``auto`` (whatever the data holds).
        max_transitions: use at most this many (the original's 50,000; ``None`` = all).
        env: when given, the data must fit this gymnasium env: its observation size, its
            action count, and (HDF5) the env it was recorded on.

    Raises:
        UserError: missing or empty dataset, malformed content (naming file and line), or
            the wrong kind of data.
    """
    data = _load(Path(path), kind, max_transitions, env)
    if env is not None:
        check_matches_env(data, env)
    return data


def check_matches_env(transitions: Transitions, env: str) -> None:
    """Raise :class:`UserError` unless ``transitions`` fit ``env``'s spaces."""
    from ilpo.experts import make_env

    instance = make_env(env)
    try:
        shape = instance.observation_space.shape
        num_actions = getattr(instance.action_space, "n", None)
    finally:
        instance.close()
    if shape is None or len(shape) != 1:
        raise UserError(f"{env} does not have vector observations; vector demonstrations need them")
    transitions.check_state_dim(int(shape[0]), env)
    if transitions.actions is not None and num_actions is not None:
        transitions.check_actions(int(num_actions), env)


def _load(p: Path, kind: TextKind, max_transitions: int | None, env: str | None) -> Transitions:
    if not p.exists():
        raise UserError(f"{p}: dataset not found; pass a demonstration folder or .h5 file")
    if p.is_dir() and (p / HDF5_FILE).is_file() and not any(p.glob("*.txt")):
        p = p / HDF5_FILE
    if p.is_file() and p.suffix in {".h5", ".hdf5"}:
        transitions, recorded = read_hdf5(p, max_transitions=max_transitions)
        if env is not None and recorded != env:
            raise UserError(f"{p}: recorded on {recorded}, not {env}; pass {env} demonstrations")
        if kind == "states":
            return transitions.without_actions()
        return transitions
    if p.is_dir() and not any(p.glob("*.txt")) and any(p.glob("*.png")):
        raise UserError(
            f"{p}: holds PNG frame pairs, an image dataset; vector demonstrations are *.txt "
            "files or demonstrations.h5"
        )
    if p.is_file() and p.suffix != ".txt":
        raise UserError(f"{p}: not a demonstration file; pass a .txt or .h5 file or a folder")
    return read_text_folder(p, kind=kind, max_transitions=max_transitions)
