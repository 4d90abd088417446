from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from compkit_utils.checkpoints import load_checkpoint
from compkit_utils.config import load
from compkit_utils.testing import assert_run_dir, only_run_dir
from rim_cells.cli import main
from rim_cells.config import SeqMnistTrainConfig


def test_help_does_not_import_torch():
    code = (
        "import sys; from rim_cells.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported by --help'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "seqmnist" in out.stdout
    assert "plot-activations" in out.stdout


def test_nested_subcommand_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["seqmnist", "--help"])
    assert exc.value.code == 0
    assert "train" in capsys.readouterr().out


def test_smoke_train_evaluate_plot_and_resume(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["seqmnist", "train", "--smoke", "--runs-dir", str(runs), "--run-name", "r"]) == 0
    run_dir = only_run_dir(runs, "rim-cells")
    records = assert_run_dir(run_dir)
    assert {"train/loss", "eval/acc_8", "eval/acc_10"} <= set(records[0])
    cfg = load(run_dir / "config.json", SeqMnistTrainConfig)
    assert cfg.smoke
    assert cfg.model.rim.num_units == 3  # the resolved (smoke) config is stored
    ckpt = run_dir / "checkpoints" / "last.pt"

    out_json = tmp_path / "eval.json"
    assert main(["seqmnist", "evaluate", "--checkpoint", str(ckpt), "--out", str(out_json)]) == 0
    accs = json.loads(out_json.read_text())["accuracy"]
    assert set(accs) == {"8", "10"}
    assert accs["8"] == pytest.approx(records[-1]["eval/acc_8"])

    png = tmp_path / "act.png"
    assert main(["plot-activations", "--checkpoint", str(ckpt), "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_resume_continues_exactly(tmp_path, capsys):
    # --smoke sets one epoch; the explicit --epochs wins
    runs = tmp_path / "runs"
    base = ["seqmnist", "train", "--smoke", "--runs-dir", str(runs)]
    assert main([*base, "--run-name", "full", "--epochs", "2"]) == 0
    assert main([*base, "--run-name", "part", "--epochs", "1"]) == 0
    # a run's model, optimiser, data or seed cannot change on resume (exit 2, names the field)
    bad = [
        *base,
        "--run-name",
        "part",
        "--epochs",
        "2",
        "--resume",
        "--model.activation",
        "raw_score",
    ]
    assert main(bad) == 2
    assert "'model'" in capsys.readouterr().err
    # the epoch budget can: extending the finished 1-epoch run equals the 2-epoch run
    assert main([*base, "--run-name", "part", "--epochs", "2", "--resume"]) == 0
    assert _records(runs / "rim-cells" / "part")[-1] == _records(runs / "rim-cells" / "full")[
        -1
    ] | {"time/train_epoch_s": _records(runs / "rim-cells" / "part")[-1]["time/train_epoch_s"]}
    # an interrupted 2-epoch run resumes too: make one by truncating "full"
    assert main([*base, "--run-name", "cut", "--epochs", "2"]) == 0
    cut = runs / "rim-cells" / "cut" / "checkpoints"
    first = sorted(cut.glob("step_*.pt"))[0]
    (cut / "last.pt").write_bytes(first.read_bytes())
    assert main([*base, "--run-name", "cut", "--epochs", "2", "--resume"]) == 0
    full = [r for r in _records(runs / "rim-cells" / "full")]
    resumed = [r for r in _records(runs / "rim-cells" / "cut")]
    assert [r["step"] for r in resumed] == [r["step"] for r in full]
    for a, b in zip(full, resumed, strict=True):
        a.pop("time/train_epoch_s")
        b.pop("time/train_epoch_s")
        assert a == b
    sa = load_checkpoint(runs / "rim-cells" / "full" / "checkpoints" / "last.pt")["model"]
    sb = load_checkpoint(cut / "last.pt")["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_ctrl_c_saves_a_checkpoint_and_resume_continues_exactly(tmp_path, monkeypatch, capsys):
    import rim_cells.seqmnist.train as train_mod

    runs = tmp_path / "runs"
    base = ["seqmnist", "train", "--smoke", "--runs-dir", str(runs), "--epochs", "2"]
    assert main([*base, "--run-name", "full"]) == 0
    real_loss, calls = train_mod.loss_fn, []

    def interrupted_loss(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # epoch 2 (3 batches per epoch), after its first batch
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_mod, "loss_fn", interrupted_loss)
    capsys.readouterr()
    assert main([*base, "--run-name", "cut"]) == 130
    assert "interrupted; rerun with --resume to continue" in capsys.readouterr().err
    cut = runs / "rim-cells" / "cut"
    state = load_checkpoint(cut / "checkpoints" / "last.pt")
    assert state["step"] == 4
    assert (state["extra"]["epoch"], state["extra"]["batch"]) == (1, 1)
    monkeypatch.setattr(train_mod, "loss_fn", real_loss)
    assert main([*base, "--run-name", "cut", "--resume"]) == 0
    full, resumed = _records(runs / "rim-cells" / "full"), _records(cut)
    for rec in (*full, *resumed):
        rec.pop("time/train_epoch_s")
    assert resumed == full
    sa = load_checkpoint(runs / "rim-cells" / "full" / "checkpoints" / "last.pt")["model"]
    sb = load_checkpoint(cut / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_seeded_runs_are_identical(tmp_path):
    runs = tmp_path / "runs"
    base = ["seqmnist", "train", "--smoke", "--runs-dir", str(runs), "--model.kind", "lstm"]
    assert main([*base, "--run-name", "a"]) == 0
    assert main([*base, "--run-name", "b"]) == 0
    ra, rb = _records(runs / "rim-cells" / "a"), _records(runs / "rim-cells" / "b")
    for rec in (*ra, *rb):
        rec.pop("time/train_epoch_s")
    assert ra == rb


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["seqmnist", "train", "--model.k-active", "9"], "--model.k-active (9) must be at most"),
        (["seqmnist", "train", "--smoke", "--resume"], "--resume: no train run"),
        (["seqmnist", "evaluate"], "--checkpoint is required"),
        (["seqmnist", "evaluate", "--checkpoint", "/nonexistent/last.pt"], "file not found"),
        (["plot-activations", "--checkpoint", "/nonexistent.pt"], "file not found"),
        (["plot-activations"], "--checkpoint is required"),
        (["bench", "--threads", "0"], "--threads"),
    ],
)
def test_user_errors_are_one_line_exit_2(tmp_path, capsys, argv, message):
    assert main([*argv, *(["--runs-dir", str(tmp_path)] if "train" in argv else [])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rim-cells: error:")
    assert message in err
    assert "\n" not in err


def test_tensorboard_event_files(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = tmp_path / "runs"
    argv = ["seqmnist", "train", "--smoke", "--runs-dir", str(runs), "--log.tensorboard"]
    assert main([*argv, "--model.kind", "lstm"]) == 0
    run_dir = only_run_dir(runs, "rim-cells")
    events = list(run_dir.glob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(events[0]))
    accumulator.Reload()
    assert {"train/loss", "eval/acc_8"} <= set(accumulator.Tags()["scalars"])


def test_lstm_model_refuses_plot_before_training(tmp_path, capsys, monkeypatch):
    import rim_cells.seqmnist.train as train_mod

    def no_training(cfg):
        raise AssertionError("training started")

    monkeypatch.setattr(train_mod, "train", no_training)
    argv = ["seqmnist", "train", "--smoke", "--model.kind", "lstm", "--plot"]
    assert main([*argv, "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "--plot needs --model.kind rim" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_mnist_path_with_monkeypatched_loader(tmp_path, monkeypatch):
    """The MNIST code path (28x28 -> 14 train, larger tests) with a stand-in loader."""
    import rim_cells.seqmnist.data as data_mod

    rng = np.random.default_rng(0)
    calls = []

    def fake_load(split, cfg):
        calls.append((split, cfg.data_dir, cfg.download))
        n = 40 if split == "train" else 20
        return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)

    monkeypatch.setattr(data_mod, "_load_mnist", fake_load)
    from rim_cells.config import SeqDataConfig

    data = data_mod.load_sequences(SeqDataConfig(dataset="mnist", data_dir="/x"), seed=0)
    assert data.train_x.shape == (40, 14 * 14)
    assert {s: x.shape for s, (x, _) in data.tests.items()} == {
        14: (20, 196),
        16: (20, 256),
        19: (20, 361),
        24: (20, 576),
    }
    assert set(np.unique(data.train_x)) <= {0, 1}
    assert calls == [("train", "/x", True), ("test", "/x", True)]


def test_bench_quick_runs(capsys, tmp_path):
    out = tmp_path / "bench.json"
    argv = [
        "bench",
        "--quick",
        "--seq-len",
        "3",
        "--batch-size",
        "2",
        "--hidden-size",
        "8",
        "--sweep-units",
        "2",
        "4",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "RIMCell loop" in text
    assert "x nn.LSTM" in text
    result = json.loads(out.read_text())
    assert result["ratios_min"]["nn.LSTM"] == 1.0
    assert [row["num_units"] for row in result["scaling"]] == [2, 4]
