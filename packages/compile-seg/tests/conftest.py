from __future__ import annotations

import pytest

from compkit_utils.devices import prefer_thread_invariant_blas
from compkit_utils.testing import _one_torch_thread  # noqa: F401  (autouse fixture)

# As the command line does before its first matrix product: MKL reads MKL_CBWR once, at its
# first call, so in-process runs only get thread-invariant products if it is set this early.
prefer_thread_invariant_blas()

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
