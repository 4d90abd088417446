from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch._dynamo  # noqa: F401  (see below)

from compkit_utils.testing import _one_torch_thread  # noqa: F401  (autouse fixture)

# torch._dynamo (which loads triton's native library when triton is installed) is imported
# before any test runs: loading it for the first time after a test had rendered with pygame
# crashed the pytest process with a segmentation fault (measured with torch 2.15 / triton:
# `pytest test_env.py test_bench.py`; the full suite loads it earlier and was not affected;
# the same sequence outside pytest did not crash).

SMALL_PER_GOAL = 2


def random_frames(n: int, seed: int = 0) -> tuple[Any, Any, Any]:
    """``n`` random frames: images [n, 8, 8, 3] uint8 (object, colour, state codes), directions
    [n] int64, mission token ids [n, 5] int64 (the 15 words of the vocabulary)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    images = torch.stack(
        (
            torch.randint(0, 11, (n, 8, 8), generator=g),
            torch.randint(0, 6, (n, 8, 8), generator=g),
            torch.randint(0, 3, (n, 8, 8), generator=g),
        ),
        dim=-1,
    ).to(torch.uint8)
    return images, torch.randint(0, 4, (n,), generator=g), torch.randint(0, 15, (n, 5), generator=g)


def generate_args(out: Path, *extra: str) -> list[str]:
    return ["generate", "--out-dir", str(out), "--no-progress", *extra]


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `generate` dataset: 2 demonstrations per goal, HDF5 and TFDS, made once per session."""
    from factored_attention_babyai.cli import main

    out = tmp_path_factory.mktemp("babyai") / "data"
    args = ["--per-goal", str(SMALL_PER_GOAL), "--block-size", "512", "--formats", "hdf5", "tfds"]
    assert main(generate_args(out, *args)) == 0
    return out


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `generate` dataset: 1 demonstration per goal, HDF5 only, one process, blocks of 256."""
    from factored_attention_babyai.cli import main

    out = tmp_path_factory.mktemp("babyai") / "tiny"
    assert main(generate_args(out, "--per-goal", "1", "--block-size", "256")) == 0
    return out
