"""Issue target: the planner on a trained discriminator reaches ≥ 0.8 OOD success at 1000 demos
per goal, within a stated CPU budget.

The budget, measured by running this test on a 2-core AMD EPYC VM beside one or two other
jobs (load 2-3.5): 7,961 s = 2 h 13 min wall (``generate --per-goal 1000`` on two processes
186 s, the 2,500-step sparse factored discriminator ≈ 24.5 min, 7,500 planner steps 6,304 s;
one torch thread each); it passed with OOD 0.831 (ID 0.777) at step 7,500. Hence the
``long`` marker: ``nox -s slow`` leaves it out, ``nox -s long`` runs it (docs/
factored-attention-babyai/planner.md gives the whole learning curve of the same configuration).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factored_attention_babyai.cli import main

PROG = "factored-attention-babyai"


@pytest.mark.slow
@pytest.mark.long
def test_planner_reaches_0_8_ood_at_1000_demos_per_goal(tmp_path: Path) -> None:
    data, runs = tmp_path / "d1000", tmp_path / "runs"
    assert main(["generate", "--out-dir", str(data), "--per-goal", "1000", "--n-procs", "2"]) == 0
    common = ["--data", str(data), "--per-goal", "980", "--seed", "0", "--threads", "1"]
    common += ["--runs-dir", str(runs)]
    disc = ["train-discriminator", "--model", "independent", "--steps", "2500"]
    disc += ["--batch-size", "128", "--lr", "1e-3", "--l1-start", "250", "--l1-end", "1000"]
    assert main([*disc, *common, "--run-name", "disc"]) == 0
    planner = ["train-planner", "--interaction", str(runs / PROG / "disc"), "--k", "10"]
    planner += ["--steps", "7500", "--eval-every", "1500"]
    assert main([*planner, *common, "--run-name", "planner"]) == 0
    records = (runs / PROG / "planner" / "metrics.jsonl").read_text().splitlines()
    points = [json.loads(r) for r in records if "vsucc/dataloader_idx_1" in r]
    curve = [(p["step"], p["vsucc/dataloader_idx_0"], p["vsucc/dataloader_idx_1"]) for p in points]
    assert [step for step, _, _ in curve] == [1500, 3000, 4500, 6000, 7500], curve
    # 480 OOD rollouts (40 held-out seeds × 12 held-out goals) at step 7,500.
    assert curve[-1][2] >= 0.8, curve
