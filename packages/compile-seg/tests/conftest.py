from __future__ import annotations

import pytest

from compkit_utils.testing import _one_torch_thread  # noqa: F401  (autouse fixture)

# Small, fast settings for in-process runs (flags of `compile-seg train`).
TINY = [
    "--batch-size",
    "32",
    "--hidden-dim",
    "16",
    "--latent-dim",
    "8",
    "--heldout-size",
    "32",
    "--device",
    "cpu",
]


@pytest.fixture
def tiny_args() -> list[str]:
    return list(TINY)
