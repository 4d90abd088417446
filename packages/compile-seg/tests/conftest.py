from __future__ import annotations

import pytest
import torch

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


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests use one CPU thread: deterministic and no over-subscription on small machines."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_args() -> list[str]:
    return list(TINY)
