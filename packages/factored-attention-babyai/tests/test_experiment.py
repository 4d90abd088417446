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


@pytest.mark.slow  # three sweeps, each a fresh worker process importing torch: 40-150 s
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


@pytest.mark.parametrize("name", ["cpu", "smoke", "paper"])
def test_every_preset_is_a_valid_configuration(
    name: str, tiny_dataset: Path, tmp_path: Path
) -> None:
    """Each stage's arguments parse and validate as the trainers' own configs (nothing runs)."""
    from compkit_utils.config import run_cli
    from compkit_utils.sweep.core import SweepOptions, prepare_sweep
    from compkit_utils.sweep.grid import parse_seeds
    from factored_attention_babyai.bc_config import BcGridConfig
    from factored_attention_babyai.cli import COMMANDS
    from factored_attention_babyai.experiment_config import PRESETS

    preset = PRESETS[name]
    limits = ["--vlimit", str(preset.vlimit), "--tlimit", str(preset.tlimit)]
    common = ["--data", str(tiny_dataset), *limits, "--per-goal", str(max(preset.sizes))]
    parsed: list = []
    for command, args in (
        ("train-discriminator", [*preset.discriminator, "--model", "independent"]),
        ("train-planner", [*preset.planner, "--interaction", str(tmp_path)]),
    ):
        assert run_cli(COMMANDS, parsed.append, [command, *common, *args], prog=PROG) == 0
        grid = ("per-goal=" + ",".join(map(str, preset.sizes)),)
        options = SweepOptions(
            PROG, (command,), preset.seeds, grid=grid, args=tuple(args), runs_dir=str(tmp_path)
        )
        runs = len(preset.sizes) * len(parse_seeds(preset.seeds))
        assert len(prepare_sweep(options).runs) == runs
    disc, planner = parsed
    bc = BcGridConfig(data=tiny_dataset, per_goal=preset.sizes, steps=preset.bc_steps)
    bc.check()
    assert list(tmp_path.iterdir()) == []  # nothing was written
    if name == "paper":  # spec §8.1: the paper's grid and schedules
        assert preset.sizes == (50, 100, 250, 500, 1000, 2500, 5000, 9980)
        assert preset.seeds == "0-9"
        assert (disc.steps, disc.batch_size, disc.lr) == (200_000, 1024, 1e-4)
        assert (planner.steps, planner.k, planner.batch_size) == (70_000, 10, 32)
        assert bc.steps is None  # train-bc's paper steps: 70,000 FiLM / 120,000 Transformer
        assert preset.per_goal_needed == 10_000
