"""Seeding and capture/restore of every random number generator a run uses."""

from __future__ import annotations

import random
from types import ModuleType
from typing import Any

import numpy as np

from compkit_utils.errors import missing_torch


def _torch() -> ModuleType | None:
    """Torch when it is installed (the ``torch`` extra); ``None`` in a torch-free install."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and CUDA) when installed.

    Args:
        seed: a non-negative integer.

    Returns:
        A fresh ``numpy.random.Generator`` seeded with ``seed``; code should draw from it
        explicitly instead of from the global NumPy state.
    """
    torch = _torch()
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeding the legacy global is the point
    if torch is not None:
        torch.manual_seed(seed)
    return np.random.default_rng(seed)


def capture_rng_state(generator: np.random.Generator | None = None) -> dict[str, Any]:
    """Snapshot the RNG states as plain data (loadable with ``weights_only=True``).

    Args:
        generator: an explicit NumPy generator whose bit-generator state is captured too.

    Returns:
        ``{"python": list, "numpy": dict, "torch": uint8 tensor, "cuda": [tensors],
        "generator": dict | None}``; ``"torch"`` is ``None`` without torch installed.
    """
    torch = _torch()
    cuda = torch is not None and torch.cuda.is_available()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": _numpy_legacy_state(),
        "torch": torch.get_rng_state() if torch is not None else None,
        "cuda": list(torch.cuda.get_rng_state_all()) if torch is not None and cuda else [],
        "generator": _plain(generator.bit_generator.state) if generator is not None else None,
    }
    return state


def restore_rng_state(state: dict[str, Any], generator: np.random.Generator | None = None) -> None:
    """Restore states captured by :func:`capture_rng_state`.

    Args:
        state: the captured dictionary.
        generator: a NumPy generator to restore in place (must be of the same bit
            generator type as the captured one).
    """
    torch = _torch()
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    legacy = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            legacy["bit_generator"],
            np.asarray(legacy["key"], dtype=np.uint32),
            int(legacy["pos"]),
            int(legacy["has_gauss"]),
            float(legacy["cached_gaussian"]),
        )
    )
    saved = state.get("torch")
    if saved is not None:
        if torch is None:
            raise missing_torch("restoring a torch random state")
        torch.set_rng_state(saved.cpu() if hasattr(saved, "cpu") else saved)
        if state.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and state.get("generator") is not None:
        generator.bit_generator.state = state["generator"]


def _numpy_legacy_state() -> dict[str, Any]:
    name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]  # noqa: NPY002
    return {
        "bit_generator": str(name),
        "key": [int(k) for k in key],
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _plain(value: Any) -> Any:
    """Convert NumPy scalars/arrays inside a nested structure to Python types."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
