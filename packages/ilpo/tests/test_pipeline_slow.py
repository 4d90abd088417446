"""The CartPole quick pipeline end to end: expert → demonstrations → LPN → ARN over seeds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compkit_utils.logging import read_metrics
from ilpo.cli import main


@pytest.mark.slow
def test_cartpole_quick_pipeline_reaches_the_demonstrator(tmp_path: Path) -> None:
    runs = ["--runs-dir", str(tmp_path)]
    root = tmp_path / "ilpo"
    assert main(["expert", "--env", "CartPole-v1", "--run-name", "expert", *runs]) == 0
    collect = ["collect", "--expert", str(root / "expert"), "--run-name", "demos"]
    assert main([*collect, "--transitions", "20000", *runs]) == 0
    demonstrator = read_metrics(root / "demos")[-1]["demonstrator/return_mean"]
    lpn = ["lpn", "--data", str(root / "demos"), "--epochs", "5", "--run-name", "lpn"]
    assert main([*lpn, *runs]) == 0
    finals = []
    for seed in range(3):
        arn = ["arn", "--lpn", str(root / "lpn"), "--seed", str(seed), "--run-name", f"arn{seed}"]
        assert main([*arn, "--random-episodes", "0", *runs]) == 0
        result = json.loads((root / f"arn{seed}" / "result.json").read_text())
        assert len(result["curve"]) == 20
        finals.append(result["final_heldout_mean"])
    assert float(np.mean(finals)) >= 0.9 * demonstrator


@pytest.mark.slow
def test_image_experiment_smoke_end_to_end(tmp_path: Path) -> None:
    """`ilpo experiment --smoke --env <MiniGrid env>`: BFS frames → U-Net LPN → image ARN sweep."""
    argv = ["experiment", "--smoke", "--env", "MiniGrid-Empty-Random-6x6-v0"]
    assert main([*argv, "--runs-dir", str(tmp_path), "--run-name", "img"]) == 0
    run = tmp_path / "ilpo" / "img"
    results = json.loads((run / "results.json").read_text())
    assert results["kind"] == "image"
    assert set(results["rows"]) == {"ILPO", "Demonstrator", "Expert (clean)", "Random"}
    assert results["rows"]["ILPO"]["n"] == 2
    assert 0.9 < results["rows"]["Expert (clean)"]["mean"] <= 1.0
    assert (run / "curves.png").stat().st_size > 1000
    assert (
        len(list((run / "ilpo" / "collect" / "MiniGrid-Empty-Random-6x6-v0").glob("*.png"))) >= 40
    )
