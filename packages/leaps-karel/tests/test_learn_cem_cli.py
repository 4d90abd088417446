"""``leaps-karel cem`` end to end with a random decoder: run directory, determinism, resume,
Ctrl-C, results, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch  # noqa: F401  (the `learn` extra is in the test environment)

from compkit_utils.testing import one_error_line, tree
from leaps_karel.cli import main
from leaps_karel.learn import cem

FAST = ["--random-decoder", "--population", "6", "--fresh-worlds", "12", "--quiet"]


def run(tmp: Path, name: str, *args: str) -> Path:
    assert main(["cem", *FAST, "--runs-dir", str(tmp), "--run-name", name, *args]) == 0
    return tmp / "leaps-karel" / name


def comparable(results: dict) -> dict:
    """results.json without the per-process fields."""
    skip = {"seconds_this_process", "distinct_programs_executed_this_process"}
    return {k: v for k, v in results.items() if k not in skip}


def test_cem_run_directory_and_results(tmp_path: Path) -> None:
    path = run(tmp_path, "a", "--task", "harvester", "--max-iterations", "4")
    records = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 4]
    assert [r["cem/episodes"] for r in records[:4]] == [70, 140, 210, 280]  # (6 + 1) · 10
    assert all(r["cem/sigma"] == 0.5 for r in records[:2])
    assert records[2]["cem/sigma"] < 0.5  # harvester decays σ from iteration 3
    results = json.loads((path / "results.json").read_text())
    assert results["program"] == (path / "program.txt").read_text().strip()
    assert results["fresh"]["worlds"] == 12
    assert results["in_sample"]["worlds"] == 10
    for part in ("in_sample", "fresh"):
        r = results[part]
        if results["valid"]:
            assert r["return_with_bonus"] == pytest.approx(r["return_without_bonus"] + 0.1)
        else:
            assert (r["return_with_bonus"], r["return_without_bonus"]) == (0.01, 0.0)
    assert records[-1]["eval/fresh"] == results["fresh"]["return_without_bonus"]
    assert (path / "checkpoints" / "last.pt").is_file()
    assert not (path / ".lock").exists()


def test_cem_cli_is_deterministic(tmp_path: Path) -> None:
    a = run(tmp_path, "a", "--task", "maze", "--max-iterations", "3", "--seed", "4")
    b = run(tmp_path, "b", "--task", "maze", "--max-iterations", "3", "--seed", "4")
    assert (a / "metrics.jsonl").read_bytes() == (b / "metrics.jsonl").read_bytes()
    ra, rb = (json.loads((p / "results.json").read_text()) for p in (a, b))
    assert comparable(ra) == comparable(rb)


@pytest.mark.parametrize("method", ["cem", "rand-8"])
def test_resume_after_ctrl_c_equals_uninterrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], method: str
) -> None:
    args = ["--task", "topoff", "--max-iterations", "6", "--method", method, "--n-elite", "2"]
    whole = run(tmp_path, "whole", *args)
    cls = (
        cem.CemSearch
        if method == "cem"
        else __import__("leaps_karel.learn.random_search", fromlist=["RandomSearch"]).RandomSearch
    )
    real_step = cls.step

    def interrupted(self):  # Ctrl-C during iteration 4
        if self.iteration == 3:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(cls, "step", interrupted)
    argv = ["cem", *FAST, "--runs-dir", str(tmp_path), "--run-name", "cut", *args]
    assert main(argv) == 130
    assert "--resume" in capsys.readouterr().err
    cut = tmp_path / "leaps-karel" / "cut"
    assert (cut / "checkpoints" / "last.pt").is_file()
    assert len((cut / "metrics.jsonl").read_text().splitlines()) == 3
    monkeypatch.setattr(cls, "step", real_step)
    assert main([*argv, "--resume"]) == 0
    assert (cut / "metrics.jsonl").read_bytes() == (whole / "metrics.jsonl").read_bytes()
    r_whole, r_cut = (json.loads((p / "results.json").read_text()) for p in (whole, cut))
    assert comparable(r_whole) == comparable(r_cut)


def test_reconstruction_target_runs(tmp_path: Path) -> None:
    path = run(tmp_path, "t", "--target-program", "test1", "--population", "8",
               "--max-iterations", "2")  # fmt: skip
    results = json.loads((path / "results.json").read_text())
    assert results["target_program"].startswith("DEF run m( WHILE c( frontIsClear")
    assert results["preset"] == "base"
    assert results["task"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "nope"], "--task must be one of"),
        (["--population", "2", "--n-elite", "3"], "--n-elite (3) must not exceed --population"),
        (["--population", "4", "--elitism-rate", "0.05"], "rounds to 0 elites"),
        (["--target-program", "DEF run m( move"], "--target-program"),
        (["--preset", "nope"], "--preset must be one of"),
        (["--weights", "missing.safetensors"], "missing.safetensors"),
        (["--sigma", "0"], "--sigma must be > 0"),
        (["--resume", "--run-name", "never"], "--resume"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    before = tree(tmp_path)
    argv = ["cem", "--random-decoder", "--runs-dir", str(tmp_path), *args]
    if "--weights" in args:
        argv.remove("--random-decoder")
    assert main(argv) == 2
    assert message in one_error_line(capsys.readouterr().err, "leaps-karel")
    assert tree(tmp_path) == before


@pytest.mark.slow
def test_cem_with_the_shipped_weights_solves_maze_seed_0(tmp_path: Path) -> None:
    argv = ["cem", "--task", "maze", "--seed", "0", "--quiet", "--runs-dir", str(tmp_path)]
    assert main([*argv, "--run-name", "m"]) == 0
    results = json.loads((tmp_path / "leaps-karel" / "m" / "results.json").read_text())
    assert results["solved_early"]  # the decoded mean scored 1.1 ten iterations in a row
    assert results["in_sample"]["return_without_bonus"] == 1.0
    # fresh worlds: a marker on (or next to) the start scores 0 under the original's protocol
    assert results["fresh"]["return_without_bonus"] >= 0.85
