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

__all__ = ["MAX_TRANSITIONS", "TextKind", "Transitions", "load_transitions"]


def load_transitions(
    path: str | os.PathLike[str],
    *,
    kind: TextKind = "auto",
    max_transitions: int | None = MAX_TRANSITIONS,
) -> Transitions:
    """Load vector demonstrations from a text folder, a ``.txt`` file or an HDF5 file.

    Args:
        path: a folder of ``*.txt`` files, a ``.txt`` file, a ``.h5`` file, or a folder
            holding ``demonstrations.h5``.
        kind: ``states`` (ILPO, BCO: state-only; text BC files are an error, HDF5 actions
            are dropped), ``bc`` (actions required), or ``auto`` (whatever the data holds).
        max_transitions: use at most this many (the original's 50,000; ``None`` = all).

    Raises:
        UserError: missing or empty dataset, malformed content (naming file and line), or
            the wrong kind of data.
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: dataset not found; pass a demonstration folder or .h5 file")
    if p.is_dir() and (p / HDF5_FILE).is_file() and not any(p.glob("*.txt")):
        p = p / HDF5_FILE
    if p.is_file() and p.suffix in {".h5", ".hdf5"}:
        transitions, _ = read_hdf5(p, max_transitions=max_transitions)
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
