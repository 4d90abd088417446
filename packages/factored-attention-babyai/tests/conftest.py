from __future__ import annotations

from pathlib import Path

import pytest

from compkit_utils.testing import _one_torch_thread  # noqa: F401  (autouse fixture)

SMALL_PER_GOAL = 2


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
