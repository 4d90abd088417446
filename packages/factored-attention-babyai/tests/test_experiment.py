"""``experiment``: the smoke preset end to end (dataset → discriminators → planners → both
baselines → Figure 3 and results.md), a rerun that reuses every stage, and the refusal of a
rerun with other settings (seeds, preset)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compkit_utils.testing import one_error_line
from factored_attention_babyai.cli import main
from factored_attention_babyai.experiment import LABELS, STAGES

PROG = "factored-attention-babyai"


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_smoke_experiment_end_to_end_then_reused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["experiment", "--smoke", "--runs-dir", str(tmp_path), "--run-name", "e"]
    assert main(argv) == 0
    root = tmp_path / PROG / "e"
    results = (root / "results.md").read_text()
    for label in LABELS.values():
        assert f"| {label} | 2 | 2 | 1 |" in results  # one size, two seeds, one point each
    assert (root / "figures" / "figure3_id.png").stat().st_size > 1000
    assert (root / "figures" / "figure3_ood.png").stat().st_size > 1000
    summary = json.loads((root / "results.json").read_text())
    assert set(summary["stage_seconds"]) == set(STAGES)
    assert set(summary["figure3"]) == set(LABELS.values())
    sweeps = root / PROG / "sweeps"
    for name, count in (("train-discriminator", 2), ("train-planner", 2), ("train-bc", 4)):
        runs = json.loads((sweeps / name / "sweep.json").read_text())["runs"]
        assert len(runs) == count
        assert {r["status"] for r in runs.values()} == {"finished"}
    assert (sweeps / "train-discriminator" / "per-goal=2__seed=1" / "interaction.pt").is_file()
    planner = json.loads(
        (sweeps / "train-planner" / "per-goal=2__seed=1" / "config.json").read_text()
    )
    assert planner["interaction"] == str(sweeps / "train-discriminator")
    capsys.readouterr()

    before = _snapshot(root)
    assert main(argv) == 0  # every stage reused: nothing is trained or rewritten
    out = capsys.readouterr().out
    for stage in STAGES:
        assert f"experiment: {stage}: reused" in out
    after = _snapshot(root)
    changed = {k for k in before if before[k] != after.get(k)}
    assert not changed, changed

    assert main([*argv, "--seeds", "0"]) == 2  # other settings into the same folder
    message = one_error_line(capsys.readouterr().err, PROG)
    assert "--run-name e" in message
    assert "seeds" in message
    assert _snapshot(root) == after
    other = ["experiment", "--preset", "cpu", "--generate", "--runs-dir", str(tmp_path)]
    assert main([*other, "--run-name", "e"]) == 2  # another preset into the same folder
    assert "preset 'smoke' (now 'cpu')" in one_error_line(capsys.readouterr().err, PROG)
    assert _snapshot(root) == after
