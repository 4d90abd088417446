"""Image demonstrations as frames: ``frames.h5`` and the loader the image commands use.

``frames.h5`` (written by ``ilpo collect --env <image env>`` beside the PNG folder) holds
``states`` and ``next_states`` ``(N, 128, 128, 3)`` uint8 (gzip-compressed), ``actions``,
``episode_ids`` ``(N,)`` int64, ``terminated``, ``truncated`` ``(N,)`` bool, and the ``env``
attribute. :func:`load_frames` reads it, a folder of ``[A | B]`` PNGs, or a collect run.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compkit_utils.errors import UserError
from ilpo.data.images import FRAME_SIZE, read_frame_pairs

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "FRAMES_FILE",
    "FramePairs",
    "frames_to_model",
    "load_frames",
    "read_frames_hdf5",
    "write_frames_hdf5",
]

FRAMES_FILE = "frames.h5"
_KEYS = ("states", "next_states", "actions", "episode_ids", "terminated", "truncated")


@dataclasses.dataclass(frozen=True)
class FramePairs:
    """Frame transitions: ``states``, ``next_states`` uint8 ``(N, 128, 128, 3)``.

    Attributes:
        actions: ``(N,)`` int64 executed actions, or ``None`` (PNG folders).
        env: the env id recorded in the file, or ``None``.
        source: where the frames came from (for messages).
    """

    states: np.ndarray
    next_states: np.ndarray
    actions: np.ndarray | None = None
    env: str | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.states)


def frames_to_model(x: Tensor) -> Tensor:
    """uint8 ``[B, 128, 128, 3]`` → float32 ``[B, 3, 128, 128]`` in [−1, 1] (x/255·2 − 1)."""
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def write_frames_hdf5(
    path: str | os.PathLike[str],
    arrays: dict[str, np.ndarray],
    *,
    env: str,
) -> Path:
    """Write ``arrays`` (the keys above) to ``path`` atomically, frames gzip-compressed."""
    import h5py

    from compkit_utils.io import atomic_path

    missing = [k for k in _KEYS if k not in arrays]
    if missing:
        raise ValueError(f"frames.h5 needs {missing}")
    target = Path(path)
    with atomic_path(target) as tmp, h5py.File(tmp, "w") as handle:
        for key in _KEYS:
            value = np.asarray(arrays[key])
            if value.ndim == 4:
                chunks = (1, *value.shape[1:])
                handle.create_dataset(
                    key, data=value, compression="gzip", compression_opts=4, chunks=chunks
                )
            else:
                handle.create_dataset(key, data=value)
        handle.attrs["env"] = env
        handle.attrs["format_version"] = 1
    return target


def read_frames_hdf5(path: str | os.PathLike[str], *, max_pairs: int | None = None) -> FramePairs:
    """Read ``frames.h5``; a file of another layout is a :class:`UserError` naming it."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            missing = [k for k in _KEYS if k not in handle]
            if missing:
                raise UserError(f"{path}: not a frames file (missing {', '.join(missing)})")
            data: Any = handle  # h5py's stubs type members as a union without indexing
            states = np.asarray(data["states"][:max_pairs])
            next_states = np.asarray(data["next_states"][:max_pairs])
            actions = np.asarray(data["actions"][:max_pairs]).astype(np.int64)
            env = handle.attrs.get("env")
    except OSError as exc:
        raise UserError(f"{path}: not a readable HDF5 file ({exc})") from None
    shape = (FRAME_SIZE, FRAME_SIZE, 3)
    if states.dtype != np.uint8 or states.shape[1:] != shape or next_states.shape != states.shape:
        raise UserError(f"{path}: frames must be uint8 (N, {FRAME_SIZE}, {FRAME_SIZE}, 3)")
    if len(states) == 0:
        raise UserError(f"{path}: holds no frames; regenerate it")
    env_id = env.decode() if isinstance(env, bytes) else (None if env is None else str(env))
    return FramePairs(states, next_states, actions, env_id, str(path))


def load_frames(
    path: str | os.PathLike[str], *, max_pairs: int | None = None, env: str | None = None
) -> FramePairs:
    """Frames from ``frames.h5``, an ``ilpo collect`` run of an image env, or a PNG folder.

    Raises:
        UserError: missing or empty data, PNGs of the wrong size, vector demonstrations, or
            frames recorded on another env than ``env``.
    """
    p = Path(path)
    if p.is_dir() and (p / FRAMES_FILE).is_file():
        p = p / FRAMES_FILE
    if p.is_file() and p.suffix in (".h5", ".hdf5"):
        pairs = read_frames_hdf5(p, max_pairs=max_pairs)
    elif p.is_dir() and not any(p.glob("*.png")) and any(p.glob("*.h5")):
        raise UserError(f"{p}: holds vector demonstrations, not frames; pass an image dataset")
    else:
        _, first, second = read_frame_pairs(p, max_pairs=max_pairs)
        pairs = FramePairs(first, second, None, None, str(p))
    if env is not None and pairs.env is not None and pairs.env != env:
        raise UserError(f"{p}: frames of {pairs.env}, not {env}; pass --env {pairs.env}")
    return pairs
