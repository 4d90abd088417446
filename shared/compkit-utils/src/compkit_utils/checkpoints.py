"""Checkpoints: atomic saves, ``weights_only`` loads, resume, keep-last-N.

A checkpoint is a plain dictionary (tensors, numbers, strings, lists, dicts) so it loads
with ``torch.load(path, weights_only=True)``::

    {"format_version": 1, "step": int, "model": state_dict, "optimizer": state_dict | None,
     "config": dict, "rng": dict, "package_version": str | None, "extra": dict}
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compkit_utils.errors import UserError, missing_torch
from compkit_utils.io import atomic_path

if TYPE_CHECKING:
    import numpy as np
    import torch

FORMAT_VERSION = 1
_STEP_FILE = re.compile(r"step_(\d+)\.pt$")


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Save ``state`` with ``torch.save`` atomically (temp file, fsync, rename).

    The state is serialised in memory first and then written with plain file I/O: torch's
    own writer reports a full disk as a bare ``RuntimeError`` ("unexpected pos"), while a
    plain write raises ``OSError(ENOSPC)`` naming the file, which CLIs turn into one line.
    """
    import io

    try:
        import torch
    except ImportError as exc:
        raise missing_torch("saving a checkpoint") from exc

    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        try:
            handle.write(buffer.getbuffer())
            handle.flush()
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    Raises:
        UserError: the file is missing, truncated/corrupt, not a compkit checkpoint, or
            of a newer format version.
    """
    try:
        import torch
    except ImportError as exc:
        raise missing_torch("loading a checkpoint") from exc

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found; pass the path of a .pt file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt bytes fail in many ways inside torch.load
        raise UserError(
            f"{path}: not a readable checkpoint ({exc.__class__.__name__}); it may be "
            "truncated or corrupt"
        ) from exc
    if not isinstance(state, dict) or "format_version" not in state:
        raise UserError(f"{path}: not a compkit checkpoint (no format_version field)")
    if state["format_version"] > FORMAT_VERSION:
        raise UserError(
            f"{path}: checkpoint format {state['format_version']} is newer than this "
            f"version supports ({FORMAT_VERSION}); upgrade the package"
        )
    return state


def make_state(
    *,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    config: dict[str, Any] | None = None,
    package_version: str | None = None,
    generator: np.random.Generator | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the checkpoint dictionary, capturing the RNG states now."""
    from compkit_utils.seeding import capture_rng_state

    return {
        "format_version": FORMAT_VERSION,
        "step": int(step),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "config": config or {},
        "rng": capture_rng_state(generator),
        "package_version": package_version,
        "extra": extra or {},
    }


class CheckpointManager:
    """Periodic checkpoints of one run: ``checkpoints/step_XXXXXX.pt`` and ``last.pt``.

    Args:
        directory: the ``checkpoints`` folder of a run.
        keep_last: how many ``step_*.pt`` files to keep (older ones are deleted);
            ``last.pt`` is always kept.
    """

    def __init__(self, directory: str | os.PathLike[str], keep_last: int = 3) -> None:
        if keep_last < 1:
            raise UserError(f"keep_last must be at least 1, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last

    @property
    def last_path(self) -> Path:
        return self.directory / "last.pt"

    def save(self, state: dict[str, Any]) -> Path:
        """Write ``state`` as ``step_<step>.pt`` and ``last.pt``; prune old step files."""
        step_path = self.directory / f"step_{state['step']:06d}.pt"
        save_checkpoint(step_path, state)
        save_checkpoint(self.last_path, state)
        for old in self.step_files()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return step_path

    def step_files(self) -> list[Path]:
        """The ``step_*.pt`` files, oldest first."""
        files = [p for p in self.directory.glob("step_*.pt") if _STEP_FILE.search(p.name)]
        return sorted(files, key=lambda p: int(_STEP_FILE.search(p.name).group(1)))  # type: ignore[union-attr]

    def latest(self) -> Path | None:
        """``last.pt`` if present, else the newest step file, else ``None``."""
        if self.last_path.is_file():
            return self.last_path
        files = self.step_files()
        return files[-1] if files else None


def restore(
    state: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    generator: np.random.Generator | None = None,
    *,
    restore_rng: bool = True,
) -> int:
    """Load model/optimizer/RNG states from a checkpoint dictionary; returns its step.

    After ``restore`` a seeded run continues exactly as if it had never stopped.
    """
    from compkit_utils.seeding import restore_rng_state

    model.load_state_dict(state["model"])
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if restore_rng and state.get("rng"):
        restore_rng_state(state["rng"], generator)
    return int(state["step"])
