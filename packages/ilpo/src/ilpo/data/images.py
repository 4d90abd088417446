"""The original's image format: a folder of ``<index>.png`` files, each ``[A | B]``.

A = the frame at t (left half), B = the frame at t+1 (right half); frames are 128×128 RGB,
so each PNG is 128 high and 256 wide. Pixels are read as RGB, scaled to [0, 1] and mapped to
[-1, 1] (x·2 − 1). Optional BC labels live in a folder of ``<index>.txt`` files holding one
integer (``1`` or ``[1]``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from compkit_utils.errors import UserError

__all__ = [
    "FRAME_SIZE",
    "ImagePairs",
    "list_image_files",
    "load_image_pairs",
    "read_action_labels",
    "read_frame_pairs",
    "to_unit_range",
    "write_image_pair",
]

FRAME_SIZE = 128


@dataclasses.dataclass(frozen=True)
class ImagePairs:
    """Frame pairs as float32 ``(N, 3, 128, 128)`` arrays in [-1, 1].

    Attributes:
        inputs: frames at t (the left halves).
        targets: frames at t+1 (the right halves).
        actions: ``(N,)`` int64 labels from the actions folder, or ``None``.
    """

    inputs: np.ndarray
    targets: np.ndarray
    actions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.inputs)


def to_unit_range(frame: np.ndarray) -> np.ndarray:
    """``uint8 (H, W, 3)`` → float32 ``(3, H, W)`` in [-1, 1]."""
    return (frame.astype(np.float32) / 255.0 * 2.0 - 1.0).transpose(2, 0, 1)


def list_image_files(folder: Path) -> list[Path]:
    """The ``*.png`` files of ``folder``: numeric order when all stems are integers."""
    files = [p for p in folder.glob("*.png") if p.is_file()]
    if files and all(p.stem.isdigit() for p in files):
        return sorted(files, key=lambda p: int(p.stem))
    return sorted(files)


def _read_action(path: Path) -> int:
    text = path.read_text().strip().strip("[]").strip()
    try:
        return int(text)
    except ValueError:
        msg = f"{path}: expected one integer action like 1 or [1], got {text[:40]!r}"
        raise UserError(msg) from None


def read_frame_pairs(
    folder: str | os.PathLike[str], *, max_pairs: int | None = None, resize: bool = False
) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Read a folder of ``[A | B]`` PNGs as ``uint8 (N, 128, 128, 3)`` frames A and B.

    Returns the files read, A (frames at t) and B (frames at t+1). Errors as
    :func:`load_image_pairs`.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(folder)
    if not path.is_dir():
        raise UserError(f"{path}: image dataset folder not found; pass a folder of PNG pairs")
    files = list_image_files(path)[:max_pairs]
    if not files:
        raise UserError(f"{path}: no *.png frame pairs in this folder")
    first = np.empty((len(files), FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
    second = np.empty_like(first)
    want = (2 * FRAME_SIZE, FRAME_SIZE)
    for i, file in enumerate(files):
        try:
            with Image.open(file) as image:
                rgb = image.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"{file}: not a readable PNG ({exc})") from None
        if rgb.size != want:
            if not resize:
                raise UserError(
                    f"{file}: is {rgb.size[0]}×{rgb.size[1]} (W×H) but a frame pair must be "
                    f"{want[0]}×{want[1]} ([A | B], two {FRAME_SIZE}×{FRAME_SIZE} frames)"
                )
            rgb = rgb.resize(want, Image.Resampling.BILINEAR)
        pixels = np.asarray(rgb)
        first[i] = pixels[:, :FRAME_SIZE]
        second[i] = pixels[:, FRAME_SIZE:]
    return files, first, second


def read_action_labels(actions_dir: str | os.PathLike[str], files: list[Path]) -> np.ndarray:
    """``(N,)`` int64 labels from ``<actions_dir>/<stem>.txt`` for each PNG of ``files``."""
    adir = Path(actions_dir)
    labels = []
    for file in files:
        label = adir / f"{file.stem}.txt"
        if not label.is_file():
            raise UserError(f"{label}: action label of {file.name} not found")
        labels.append(_read_action(label))
    return np.asarray(labels, dtype=np.int64)


def load_image_pairs(
    folder: str | os.PathLike[str],
    *,
    actions_dir: str | os.PathLike[str] | None = None,
    max_pairs: int | None = None,
    resize: bool = False,
) -> ImagePairs:
    """Read a folder of ``[A | B]`` PNGs.

    Args:
        folder: the dataset folder.
        actions_dir: folder of ``<index>.txt`` action labels (image BC), or ``None``.
        max_pairs: read at most this many.
        resize: resize other sizes to 128×256 (bilinear) like the original instead of
            rejecting them.

    Raises:
        UserError: a missing or empty folder, a file that is not a PNG, a PNG that is not
            256×128 (without ``resize``), or a missing action label.
    """
    files, first, second = read_frame_pairs(folder, max_pairs=max_pairs, resize=resize)
    inputs = np.stack([to_unit_range(f) for f in first])
    targets = np.stack([to_unit_range(f) for f in second])
    actions = None if actions_dir is None else read_action_labels(actions_dir, files)
    return ImagePairs(inputs=inputs, targets=targets, actions=actions)


def write_image_pair(
    path: str | os.PathLike[str], frame_a: np.ndarray, frame_b: np.ndarray
) -> Path:
    """Write two ``uint8 (128, 128, 3)`` frames as one ``[A | B]`` PNG (atomically)."""
    from PIL import Image

    from compkit_utils.io import atomic_path

    if frame_a.shape != (FRAME_SIZE, FRAME_SIZE, 3) or frame_b.shape != frame_a.shape:
        raise ValueError(f"frames must be ({FRAME_SIZE}, {FRAME_SIZE}, 3) uint8")
    pair = np.concatenate([frame_a, frame_b], axis=1).astype(np.uint8)
    target = Path(path)
    with atomic_path(target) as tmp:
        Image.fromarray(pair).save(tmp, format="PNG")
    return target
