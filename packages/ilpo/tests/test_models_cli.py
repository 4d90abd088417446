"""`ilpo lpn`, `arn`, `bc`, `bco` and `bench` in-process on a tiny CartPole dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compkit_utils.logging import read_metrics
from compkit_utils.testing import assert_run_dir, only_run_dir
from ilpo.cli import main
from ilpo.commands import LPN_FILE, random_transitions
from ilpo.data.text import write_text_file
from ilpo.online import read_curve_csv


@pytest.fixture(scope="module")
def cartpole_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A state-only and a BC text folder of 300 random-policy CartPole transitions."""
    root = tmp_path_factory.mktemp("data")
    data = random_transitions("CartPole-v1", 300, seed=0)
    write_text_file(root / "states" / "0.txt", data.states, data.next_states)
    write_text_file(root / "bc" / "0.txt", data.states, data.next_states, data.actions)
    return root / "states", root / "bc"


LPN_FAST = ["--epochs", "2", "--ngf", "16", "--batch-size", "64"]


def test_lpn_trains_checkpoints_and_resumes(
    tmp_path: Path, cartpole_data: tuple[Path, Path]
) -> None:
    states, _ = cartpole_data
    runs = tmp_path / "runs"
    args = ["lpn", "--data", str(states), "--runs-dir", str(runs), "--run-name", "a"]
    args += ["--ngf", "16", "--batch-size", "64"]
    assert main([*args, "--epochs", "2", "--tensorboard"]) == 0
    run = only_run_dir(runs, "ilpo")
    records = assert_run_dir(run, min_records=2)
    assert {"train/min_loss", "train/exp_loss", "train/min_usage_0", "train/policy_usage_1"} <= set(
        records[0]
    )
    assert (run / LPN_FILE).is_file()
    assert list(run.glob("events.out.tfevents.*"))
    # --resume continues from epoch 2 to 3 (and refuses a changed setting).
    assert main([*args, "--epochs", "3", "--resume"]) == 0
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]
    assert main([*args[:-2], "--batch-size", "32", "--epochs", "4", "--resume"]) == 2


def test_arn_writes_the_original_csv_and_metrics(
    tmp_path: Path, cartpole_data: tuple[Path, Path]
) -> None:
    states, _ = cartpole_data
    runs = tmp_path / "runs"
    assert (
        main(["lpn", "--data", str(states), "--runs-dir", str(runs), "--run-name", "l", *LPN_FAST])
        == 0
    )
    args = ["arn", "--lpn", str(runs / "ilpo" / "l"), "--runs-dir", str(runs), "--run-name", "r"]
    assert (
        main(
            [
                *args,
                "--steps",
                "120",
                "--heldout-episodes",
                "2",
                "--random-episodes",
                "2",
                "--seed",
                "7",
            ]
        )
        == 0
    )
    run = runs / "ilpo" / "r"
    assert [t for t, _ in read_curve_csv(run / "7.csv")] == [0, 50, 100]
    records = assert_run_dir(run, checkpoint=False, min_records=3)
    assert "eval/heldout_return" in records[0]
    result = json.loads((run / "result.json").read_text())
    assert result["final_heldout_mean"] is not None
    assert result["random_return_mean"] is not None
    assert (run / "arn.pt").is_file()


def test_arn_options(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    base = ["arn", "--smoke", "--runs-dir", str(runs), "--steps", "60", "--heldout-episodes", "0"]
    assert main([*base, "--acting", "marginal", "--eval-env", "separate", "--run-name", "m"]) == 0
    assert len(read_curve_csv(runs / "ilpo" / "m" / "0.csv")) == 2


def test_bc_and_bco(tmp_path: Path, cartpole_data: tuple[Path, Path]) -> None:
    states, bc = cartpole_data
    runs = tmp_path / "runs"
    common = ["--runs-dir", str(runs)]
    assert (
        main(
            [
                "bc",
                "--data",
                str(bc),
                *common,
                "--run-name",
                "bc",
                "--epochs",
                "2",
                "--eval-episodes",
                "3",
            ]
        )
        == 0
    )
    result = json.loads((runs / "ilpo" / "bc" / "result.json").read_text())
    assert result["episodes"] == 3
    assert result["return_mean"] > 0
    bco = ["bco", "--data", str(states), *common, "--run-name", "bco", "--steps", "100"]
    assert main([*bco, "--idm-steps", "10", "--policy-steps", "10", "--heldout-episodes", "2"]) == 0
    assert [t for t, _ in read_curve_csv(runs / "ilpo" / "bco" / "0.csv")] == [0, 50]


def test_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--smoke"]) == 0
    out = capsys.readouterr().out
    assert "ratio:" in out
