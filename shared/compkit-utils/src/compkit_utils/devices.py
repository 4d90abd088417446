"""Device selection and CPU thread control."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

from compkit_utils.errors import UserError

if TYPE_CHECKING:
    import torch

DeviceName = Literal["auto", "cpu", "cuda", "mps"]


def pick_device(name: str = "auto") -> torch.device:
    """Resolve a device name to a :class:`torch.device`.

    Args:
        name: ``"auto"`` (CUDA if available, else MPS if available, else CPU), ``"cpu"``,
            ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Raises:
        UserError: the device is unknown or not available on this machine.
    """
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        msg = f"--device {name!r} is not a device name; use auto, cpu, cuda or mps"
        raise UserError(msg) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available here; use --device cpu or auto")
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UserError(f"--device {name}: MPS is not available here; use --device cpu or auto")
    if device.type not in {"cpu", "cuda", "mps"}:
        raise UserError(f"--device {name!r} is not supported; use auto, cpu, cuda or mps")
    return device


def set_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op CPU thread count and return the count in force.

    Args:
        num_threads: threads to use; ``None`` keeps torch's choice unless the
            ``OMP_NUM_THREADS`` environment variable says otherwise. Over-subscribing a
            small machine (more threads than cores) makes small models many times slower.
    """
    import torch

    if num_threads is None and os.environ.get("OMP_NUM_THREADS"):
        num_threads = int(os.environ["OMP_NUM_THREADS"])
    if num_threads is not None:
        if num_threads < 1:
            raise UserError(f"--threads must be at least 1, got {num_threads}")
        torch.set_num_threads(num_threads)
    return torch.get_num_threads()
