"""``bench`` and ``bc-grid`` run end to end (timings are reports, never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compkit_utils.testing import one_error_line, tree
from factored_attention_babyai.cli import main


def test_bench_smoke_reports_both_evaluators(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--smoke", "--models", "transformer"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    evaluator = result["idle"]["evaluator"]["transformer"]
    assert evaluator["agreement"] == 1.0  # same seeds, same policy → same episodes
    assert evaluator["frames"] == 2 * 64  # a fresh policy never succeeds: full episodes
    assert evaluator["policy_frames"] < evaluator["frames"]  # ... and loops: cycles are cut
    assert result["idle"]["bc_steps_per_s"]["transformer"] > 0
    assert "one env at a time" in out


@pytest.mark.slow
def test_grid_smoke_sweeps_and_tabulates(tmp_path: Path) -> None:
    assert main(["bc-grid", "--smoke", "--runs-dir", str(tmp_path)]) == 0
    sweep = tmp_path / "factored-attention-babyai" / "sweeps" / "bc-grid"
    manifest = json.loads((sweep / "sweep.json").read_text())
    assert len(manifest["runs"]) == 2
    text = (sweep / "results.md").read_text()
    assert "model=film, per-goal=4" in text
    assert "model=transformer, per-goal=4" in text
    assert "selected/vsucc/dataloader_idx_1" in text


def test_grid_refuses_sizes_beyond_the_dataset(
    tmp_path: Path, small_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["bc-grid", "--data", str(small_dataset), "--runs-dir", str(tmp_path)]
    assert main([*args, "--per-goal", "1", "5", "--vlimit", "1"]) == 2
    line = one_error_line(capsys.readouterr().err, "factored-attention-babyai")
    assert "--per-goal 5" in line
    assert "generate --per-goal 6" in line
    assert tree(tmp_path) == set()


def _checkpoint(path: Path, kind: str) -> Path:
    import torch

    from compkit_utils.checkpoints import make_state, save_checkpoint
    from factored_attention_babyai.models.film import FilmPolicy

    torch.manual_seed(3)
    path.parent.mkdir(exist_ok=True)
    extra = {"kind": kind, "model": "film"}
    save_checkpoint(path, make_state(step=7, model=FilmPolicy(), extra=extra))
    return path


def test_bench_times_a_trained_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from factored_attention_babyai.train_bc import BC_KIND

    path = _checkpoint(tmp_path / "run" / "model.pt", BC_KIND)
    args = ["bench", "--smoke", "--models", "transformer", "--checkpoints", str(path), str(path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    evaluator = json.loads(out.strip().splitlines()[-1])["idle"]["evaluator"]
    label = "film (run/model.pt, step 7)"
    assert set(evaluator) == {label, label + "'", "transformer"}
    assert evaluator[label]["agreement"] == 1.0


@pytest.mark.parametrize("kind", ["discriminator", None])
def test_bench_refuses_a_checkpoint_of_something_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str | None
) -> None:
    path = tmp_path / "model.pt"
    if kind is None:
        path.write_bytes(b"not a checkpoint")
    else:
        _checkpoint(path, kind)
    assert main(["bench", "--smoke", "--checkpoints", str(path)]) == 2
    line = one_error_line(capsys.readouterr().err, "factored-attention-babyai")
    assert str(path) in line
    assert main(["bench", "--smoke", "--checkpoints", str(tmp_path / "missing.pt")]) == 2
    assert "--checkpoints" in one_error_line(capsys.readouterr().err, "factored-attention-babyai")
