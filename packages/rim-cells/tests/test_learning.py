from __future__ import annotations

import json

import pytest

from rim_cells.cli import main


@pytest.mark.slow
def test_rim_learns_digits_well_above_chance(tmp_path):
    """A small RIM on the 8x8 digits (64-step pixel sequences): 10 classes, chance = 0.1."""
    argv = [
        "seqmnist", "train", "--data.dataset", "digits", "--runs-dir", str(tmp_path),
        "--run-name", "learn", "--threads", "1", "--seed", "0", "--epochs", "10",
        "--optim.batch-size", "32", "--optim.lr", "3e-3",
        "--model.num-units", "6", "--model.k-active", "4", "--model.hidden-size", "32",
        "--model.embedding-size", "32", "--model.input-value-size", "64",
        "--model.input-key-size", "32", "--model.comm-key-size", "16",
        "--model.num-comm-heads", "2", "--data.test-sizes", "8", "11",
    ]  # fmt: skip
    assert main(argv) == 0
    lines = (tmp_path / "rim-cells" / "learn" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    best = max(r["eval/acc_8"] for r in records)
    # measured 0.61 after 10 epochs with this seed (docs/rim-cells); chance is 0.1
    assert best >= 0.45, [round(r["eval/acc_8"], 3) for r in records]
    assert max(r["eval/acc_11"] for r in records) >= 0.2  # larger, never-seen image size
