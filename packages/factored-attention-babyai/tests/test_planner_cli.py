"""train-discriminator → export-interaction → train-planner end to end (--smoke), resume, and
the planner's refusals of unusable interaction checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compkit_utils.checkpoints import load_checkpoint, save_checkpoint
from compkit_utils.testing import one_error_line, tree
from factored_attention_babyai import disc_core
from factored_attention_babyai.cli import main

PROG = "factored-attention-babyai"
DISC = [
    "train-discriminator",
    "--smoke",
    "--steps",
    "4",
    "--batch-size",
    "8",
    "--seed",
    "1",
    "--threads",
    "1",  # the module fixture runs before the one-thread fixture applies
]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def disc_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("disc")
    assert main([*DISC, "--runs-dir", str(root), "--run-name", "d", "--tensorboard"]) == 0
    return root / PROG / "d"


def test_discriminator_smoke_writes_metrics_checkpoints_and_interaction(disc_run: Path) -> None:
    records = _metrics(disc_run)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert {"bce", "timg", "me", "l1c", "l1_weight"} <= set(records[0])
    for suffix in ("dataloader_idx_0", "dataloader_idx_1"):
        for name in ("vsf1", "vsprec", "vsrecall", "vtarget"):
            assert 0 <= records[1][f"{name}/{suffix}"] < float("inf")
    best = (disc_run / "best_k_models.yaml").read_text().splitlines()
    assert len(best) == 2
    assert all((disc_run / "checkpoints" / "best" / b.split(":")[0]).is_file() for b in best)
    state = load_checkpoint(disc_run / "interaction.pt")
    assert state["extra"]["kind"] == "interaction"
    assert state["extra"]["interaction_model"] == "independent"
    assert state["optimizer"] is None
    assert (disc_run / "interaction_best.pt").is_file()
    # The same scalar names in TensorBoard event files.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next(disc_run.rglob("events.out.tfevents*")).parent))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"bce", "timg", "me", "l1c", "vsf1/dataloader_idx_0", "vsf1/dataloader_idx_1"} <= tags


def test_discriminator_resume_reproduces_the_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, disc_run: Path
) -> None:
    original = disc_core.discriminator_losses
    calls = {"n": 0}

    def interrupting(*a: object, **k: object) -> object:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(disc_core, "discriminator_losses", interrupting)
    args = [*DISC, "--runs-dir", str(tmp_path), "--run-name", "r"]
    assert main(args) == 130
    monkeypatch.setattr(disc_core, "discriminator_losses", original)
    assert main([*args, "--resume"]) == 0
    assert _metrics(tmp_path / PROG / "r") == _metrics(disc_run)


def test_planner_accepts_a_checkpoint_before_postprocessing(tmp_path: Path, disc_run: Path) -> None:
    raw = disc_run / "checkpoints" / "last.pt"
    args = ["train-planner", "--smoke", "--steps", "2", "--batch-size", "2"]
    assert (
        main([*args, "--interaction", str(raw), "--runs-dir", str(tmp_path), "--run-name", "p"])
        == 0
    )
    run = tmp_path / PROG / "p"
    records = _metrics(run)
    assert {"path", "reg", "vreg", "loss"} <= set(records[0])
    assert 0.0 <= records[-1]["vsucc/dataloader_idx_1"] <= 1.0
    state = load_checkpoint(run / "model.pt")
    assert state["extra"]["kind"] == "planner"
    # The frozen interaction weights in the planner are the discriminator's.
    exported = load_checkpoint(disc_run / "interaction.pt")["model"]
    for key, value in exported.items():
        torch.testing.assert_close(state["model"][f"interaction.{key}"], value)


def test_export_interaction(tmp_path: Path, disc_run: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "i.pt"
    src = disc_run / "checkpoints" / "last.pt"
    assert main(["export-interaction", "--checkpoint", str(src), "--out", str(out)]) == 0
    state = load_checkpoint(out)
    assert not any(key.startswith("mask.") for key in state["model"])
    capsys.readouterr()
    assert main(["export-interaction", "--checkpoint", str(src), "--out", str(out)]) == 2
    assert "--overwrite" in one_error_line(capsys.readouterr().err, PROG)


def _bad(tmp_path: Path, disc_run: Path, name: str, edit: dict) -> Path:
    state = load_checkpoint(disc_run / "interaction.pt")
    state["extra"] = {**state["extra"], **edit}
    path = tmp_path / "in" / name
    path.parent.mkdir()
    save_checkpoint(path, state)
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"interaction_model": "film"}, "holds a 'film' interaction model"),
        ({"words": ["a", "b"]}, "another vocabulary"),
        ({"kind": "factored-attention-babyai-bc"}, "not a train-discriminator or interaction"),
    ],
)
def test_planner_refuses_unusable_interaction_checkpoints(
    tmp_path: Path, disc_run: Path, capsys: pytest.CaptureFixture, edit: dict, message: str
) -> None:
    path = _bad(tmp_path, disc_run, "x.pt", edit)
    before = tree(tmp_path)
    args = ["train-planner", "--smoke", "--interaction", str(path), "--runs-dir", str(tmp_path)]
    assert main(args) == 2
    assert message in one_error_line(capsys.readouterr().err, PROG)
    assert tree(tmp_path) == before


def test_planner_needs_an_interaction_outside_smoke(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["train-planner", "--data", str(tmp_path), "--runs-dir", str(tmp_path)]) == 2
    assert "--interaction is required" in one_error_line(capsys.readouterr().err, PROG)
    assert main(["train-discriminator", "--smoke", "--batch-size", "7"]) == 2
    assert "--batch-size must be even" in one_error_line(capsys.readouterr().err, PROG)
    assert tree(tmp_path) == set()


@pytest.mark.parametrize("precision", ["32", "mixed"])
def test_planner_resume_reproduces_the_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, disc_run: Path, precision: str
) -> None:
    from factored_attention_babyai import planner as planner_module
    from factored_attention_babyai import train_bc

    monkeypatch.setattr(train_bc, "cpu_has_bfloat16", lambda: True)  # emulated where absent
    args = ["train-planner", "--smoke", "--steps", "3", "--batch-size", "2", "--eval-every", "3"]
    args += ["--precision", precision]
    args += ["--interaction", str(disc_run), "--runs-dir"]
    assert main([*args, str(tmp_path / "a"), "--run-name", "r"]) == 0
    original = planner_module.planner_batch
    calls = {"n": 0}

    def interrupting(*a: object, **k: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:  # during step 3 (2 steps done)
            raise KeyboardInterrupt
        return original(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(planner_module, "planner_batch", interrupting)
    assert main([*args, str(tmp_path / "b"), "--run-name", "r"]) == 130
    monkeypatch.setattr(planner_module, "planner_batch", original)
    assert main([*args, str(tmp_path / "b"), "--run-name", "r", "--resume"]) == 0
    assert _metrics(tmp_path / "b" / PROG / "r") == _metrics(tmp_path / "a" / PROG / "r")


def test_planner_resume_with_more_steps_equals_the_longer_run(
    tmp_path: Path, capsys: pytest.CaptureFixture, disc_run: Path
) -> None:
    args = ["train-planner", "--smoke", "--batch-size", "2", "--eval-every", "2"]
    args += ["--interaction", str(disc_run), "--run-name", "r", "--runs-dir"]
    assert main([*args, str(tmp_path / "a"), "--steps", "4"]) == 0
    assert main([*args, str(tmp_path / "b"), "--steps", "2"]) == 0  # a finished run ...
    assert main([*args, str(tmp_path / "b"), "--steps", "4", "--resume"]) == 0  # ... extended
    assert _metrics(tmp_path / "b" / PROG / "r") == _metrics(tmp_path / "a" / PROG / "r")
    capsys.readouterr()
    assert main([*args, str(tmp_path / "b"), "--steps", "3", "--resume"]) == 2
    assert "is at step 4; pass --steps 4 or more" in one_error_line(capsys.readouterr().err, PROG)


def test_planner_mixed_precision_is_recorded_and_resume_checks_it(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, disc_run: Path
) -> None:
    from factored_attention_babyai import train_bc

    monkeypatch.setattr(train_bc, "cpu_has_bfloat16", lambda: True)  # emulated where absent
    args = ["train-planner", "--smoke", "--steps", "2", "--batch-size", "2", "--eval-every", "2"]
    args += ["--interaction", str(disc_run), "--run-name", "r", "--runs-dir", str(tmp_path)]
    assert main([*args, "--precision", "mixed"]) == 0
    run = tmp_path / PROG / "r"
    assert json.loads((run / "config.json").read_text())["precision"] == "mixed"
    records = _metrics(run)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    capsys.readouterr()
    assert main([*args, "--steps", "3", "--resume"]) == 2  # float32 now: refused
    assert "precision" in one_error_line(capsys.readouterr().err, PROG)
