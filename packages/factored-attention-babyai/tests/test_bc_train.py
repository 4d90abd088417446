"""``train-bc``: the run directory, metrics names, top-k checkpoints, resume, schedules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from compkit_utils.testing import one_error_line, tree
from factored_attention_babyai import train_bc as train_bc_module
from factored_attention_babyai.bc_data import BcData
from factored_attention_babyai.cli import main
from factored_attention_babyai.train_bc import lr_multiplier, make_batch

PROG = "factored-attention-babyai"


def _run_dir(root: Path) -> Path:
    (run,) = [p for p in (root / PROG).iterdir() if p.is_dir()]
    return run


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("model", "precision"), [("film", "32"), ("transformer", "mixed")])
def test_smoke_run_writes_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str, precision: str
) -> None:
    # bfloat16 runs (emulated, slowly) on any CPU; train-bc refuses it only to spare the time.
    monkeypatch.setattr(train_bc_module, "cpu_has_bfloat16", lambda: True)
    args = ["--model", model, "--precision", precision, "--runs-dir", str(tmp_path)]
    assert main(["train-bc", "--smoke", *args, "--tensorboard"]) == 0
    run = _run_dir(tmp_path)
    for name in ("config.json", "metrics.jsonl", "model.pt", "best_k_models.yaml"):
        assert (run / name).is_file(), name
    records = _metrics(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    opt = "Adam" if model == "film" else "AdamW"
    assert {"tloss", "tentropy", f"lr-{opt}"} <= set(records[0])
    evals = [r for r in records if "vsucc/dataloader_idx_0" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(0.0 <= r["vsucc/dataloader_idx_1"] <= 1.0 for r in evals)
    best = (run / "best_k_models.yaml").read_text().splitlines()
    assert len(best) == 2
    assert all((run / "checkpoints" / "best" / line.split(":")[0]).is_file() for line in best)
    assert list(run.glob("**/events.out.tfevents.*"))
    state = torch.load(run / "model.pt", weights_only=True)
    assert state["extra"]["model"] == model


def test_resume_after_interrupt_reproduces_the_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["train-bc", "--smoke", "--steps", "4", "--seed", "3"]
    assert main([*args, "--runs-dir", str(tmp_path / "a")]) == 0
    full = _metrics(_run_dir(tmp_path / "a"))

    calls = {"n": 0}
    original = train_bc_module.make_batch

    def interrupting(*a: object, **k: object) -> dict:
        calls["n"] += 1
        if calls["n"] == 4:  # during step 4 (3 steps done, the last at step 3)
            raise KeyboardInterrupt
        return original(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(train_bc_module, "make_batch", interrupting)
    assert main([*args, "--runs-dir", str(tmp_path / "b"), "--run-name", "r"]) == 130
    monkeypatch.setattr(train_bc_module, "make_batch", original)
    assert main([*args, "--runs-dir", str(tmp_path / "b"), "--run-name", "r", "--resume"]) == 0
    resumed = _metrics(tmp_path / "b" / PROG / "r")
    assert resumed == full


def test_resume_with_the_other_model_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["train-bc", "--smoke", "--runs-dir", str(tmp_path), "--run-name", "r"]
    assert main([*base, "--model", "film"]) == 0
    before = tree(tmp_path)
    capsys.readouterr()
    assert main([*base, "--model", "transformer", "--resume"]) == 2
    line = one_error_line(capsys.readouterr().err, PROG)
    assert "'model'" in line
    assert "'film'" in line
    assert tree(tmp_path) == before


def test_missing_data_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train-bc", "--runs-dir", str(tmp_path)]) == 2
    assert "--data is required" in one_error_line(capsys.readouterr().err, PROG)
    assert tree(tmp_path) == set()


def test_transformer_schedule() -> None:
    total, warm = 1000, 0.14
    assert lr_multiplier("transformer", 0, total, warm) == 0.0
    assert lr_multiplier("transformer", 70, total, warm) == pytest.approx(0.5)
    assert lr_multiplier("transformer", 140, total, warm) == pytest.approx(1.0)
    assert lr_multiplier("transformer", total - 1, total, warm) == pytest.approx(0.01)
    mid = 140 + (total - 1 - 140) // 2
    assert lr_multiplier("transformer", mid, total, warm) == pytest.approx(0.1, rel=0.01)
    assert {lr_multiplier("film", s, total, warm) for s in (0, 500, 999)} == {1.0}
    # --no-decay: the same warm-up, then constant
    assert lr_multiplier("transformer", 70, total, warm, decay=False) == pytest.approx(0.5)
    assert {lr_multiplier("transformer", s, total, warm, False) for s in (140, mid, 999)} == {1.0}
    assert lr_multiplier("transformer", 5, total, 0.0, decay=False) == 1.0


def _toy_data(lengths: np.ndarray, images: np.ndarray) -> BcData:
    """Demos of ``lengths`` with the given ``images [N, Tmax, 8, 8, 3]``."""
    n, tmax = images.shape[:2]
    return BcData(
        images=images,
        directions=np.ones((n, tmax), dtype=np.int64),
        actions=np.full((n, tmax), 2, dtype=np.int64),
        lengths=lengths,
        missions=np.arange(n * 5).reshape(n, 5),
        id_seeds=np.zeros(0, dtype=np.int64),
        ood_seeds=np.zeros(0, dtype=np.int64),
        source="test",
    )


def test_make_batch_weights_cover_the_padded_batch() -> None:
    lengths = np.array([3, 5, 2])
    tmax = 5
    n = len(lengths)
    data = _toy_data(lengths, np.ones((n, tmax, 8, 8, 3), dtype=np.uint8))
    batch = make_batch(data, np.array([0, 1, 2]), torch.device("cpu"))
    assert int(batch["valid"].sum()) == lengths.sum()
    assert float(batch["weights"].sum()) == n * tmax
    pad = ~batch["valid"]
    assert batch["weights"][pad].tolist() == [2.0, 3.0]  # demos 0 and 2; demo 1 is full
    assert not batch["images"][pad].any()
    assert not batch["directions"][pad].any()
    assert batch["missions"][pad].tolist() == [data.missions[0].tolist(), data.missions[2].tolist()]


def test_make_batch_without_padding_keeps_only_valid_frames() -> None:
    lengths = np.array([3, 5, 2])
    n, tmax = len(lengths), 5
    images = np.zeros((n, tmax, 8, 8, 3), dtype=np.uint8)
    for i, t in enumerate(lengths):
        images[i, :t] = 10 * i + 1 + np.arange(t)[:, None, None, None]
    data = _toy_data(lengths, images)
    index = np.array([2, 0, 1])
    full = make_batch(data, index, torch.device("cpu"))
    valid_only = make_batch(data, index, torch.device("cpu"), padding=False)
    assert len(valid_only["valid"]) == lengths.sum()
    assert bool(valid_only["valid"].all())
    assert valid_only["weights"].tolist() == [1.0] * int(lengths.sum())
    for key in ("images", "directions", "missions", "actions"):
        assert torch.equal(valid_only[key], full[key][full["valid"]]), key
    assert valid_only["images"][:, 0, 0, 0].tolist() == [21, 22, 1, 2, 3, 11, 12, 13, 14, 15]


def test_no_padding_frames_run_records_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train-bc", "--smoke", "--steps", "1", "--eval-every", "1", "--no-padding-frames"]
    args += ["--runs-dir", str(tmp_path)]
    assert main(args) == 0
    run = _run_dir(tmp_path)
    assert json.loads((run / "config.json").read_text())["padding_frames"] is False
    capsys.readouterr()
    assert main([*args, "--resume", "--padding-frames"]) == 2  # another setting: refused
    assert "padding_frames" in one_error_line(capsys.readouterr().err, PROG)


def test_no_decay_run_records_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train-bc", "--smoke", "--model", "transformer", "--steps", "3", "--eval-every", "3"]
    args += ["--warmup", "0", "--no-decay", "--runs-dir", str(tmp_path)]
    assert main(args) == 0
    run = _run_dir(tmp_path)
    assert json.loads((run / "config.json").read_text())["decay"] is False
    assert [r["lr-AdamW"] for r in _metrics(run)] == [1e-3, 1e-3, 1e-3]  # constant
    capsys.readouterr()
    assert main([*args, "--resume", "--decay"]) == 2  # another setting: refused
    assert "decay" in one_error_line(capsys.readouterr().err, PROG)


def test_per_goal_larger_than_the_dataset_is_one_line(
    tmp_path: Path, small_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    args = ["train-bc", "--data", str(small_dataset), "--runs-dir", str(runs)]
    assert main([*args, "--vlimit", "1", "--tlimit", "1", "--per-goal", "2"]) == 2
    line = one_error_line(capsys.readouterr().err, PROG)
    assert "--per-goal 2" in line
    assert "--per-goal 1 or less" in line
    assert tree(tmp_path) == set()


def test_corrupt_dataset_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "data.hdf5").write_bytes(b"not an hdf5 file")
    before = tree(tmp_path)
    assert main(["train-bc", "--data", str(data), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "data" in one_error_line(capsys.readouterr().err, PROG)
    assert tree(tmp_path) == before


def test_trains_on_a_generated_dataset(tmp_path: Path, small_dataset: Path) -> None:
    args = ["train-bc", "--data", str(small_dataset), "--runs-dir", str(tmp_path)]
    opts = ["--per-goal", "1", "--vlimit", "1", "--tlimit", "1", "--steps", "1"]
    assert main([*args, *opts, "--model", "transformer", "--eval-every", "1"]) == 0
    (record,) = _metrics(_run_dir(tmp_path))
    assert record["step"] == 1
    assert "selected/vsucc/dataloader_idx_1" in record


def test_runs_from_before_padding_frames_resume(tmp_path: Path) -> None:
    """A checkpoint whose config predates --padding-frames and --decay resumes with both on."""
    args = ["train-bc", "--smoke", "--steps", "2", "--eval-every", "1", "--run-name", "r"]
    args += ["--runs-dir", str(tmp_path)]
    assert main(args) == 0
    last = tmp_path / PROG / "r" / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=False)
    del state["config"]["padding_frames"]
    del state["config"]["decay"]
    torch.save(state, last)
    assert main([*args[:2], "--steps", "3", *args[4:], "--resume"]) == 2  # steps must match
    assert main([*args, "--resume"]) == 0


@pytest.mark.parametrize("command", ["train-bc", "train-planner"])
def test_mixed_precision_is_refused_on_a_cpu_without_bfloat16(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, command: str
) -> None:
    monkeypatch.setattr(train_bc_module, "cpu_has_bfloat16", lambda: False)
    args = [command, "--smoke", "--precision", "mixed", "--device", "cpu"]
    assert main([*args, "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "--precision mixed" in err, err
    assert "use --precision 32" in err, err
    assert list(tmp_path.iterdir()) == []
