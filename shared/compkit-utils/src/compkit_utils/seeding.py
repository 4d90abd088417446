"""Seeding and capture/restore of every random number generator a run uses."""

from __future__ import annotations

import random
from typing import Any

import numpy as np


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and CUDA).

    Args:
        seed: a non-negative integer.

    Returns:
        A fresh ``numpy.random.Generator`` seeded with ``seed``; code should draw from it
        explicitly instead of from the global NumPy state.
    """
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeding the legacy global is the point
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def capture_rng_state(generator: np.random.Generator | None = None) -> dict[str, Any]:
    """Snapshot the RNG states as plain data (loadable with ``weights_only=True``).

    Args:
        generator: an explicit NumPy generator whose bit-generator state is captured too.

    Returns:
        ``{"python": list, "numpy": dict, "torch": uint8 tensor, "cuda": [tensors],
        "generator": dict | None}``.
    """
    import torch

    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": _numpy_legacy_state(),
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
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
    import torch

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
    torch.set_rng_state(state["torch"].cpu() if hasattr(state["torch"], "cpu") else state["torch"])
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
