"""Bad input to every rim-cells command: exit 2, one stderr line, nothing left behind."""

from __future__ import annotations

import errno
import os
import pathlib
import subprocess
import sys
from pathlib import Path

import pytest

from rim_cells.cli import main


def _fail(argv: list[str], capsys: pytest.CaptureFixture[str], message: str) -> str:
    """Run ``argv``; assert exit 2 and one stderr line containing ``message``."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rim-cells: error: "), err
    assert "\n" not in err, err
    assert message in err, err
    return err


def _nothing_in(folder: Path) -> None:
    """No run directory, no config.json: ``folder`` is absent or empty."""
    assert not folder.exists() or not any(folder.rglob("*")), sorted(folder.rglob("*"))


def _seq(runs: Path, *extra: str) -> list[str]:
    return ["seqmnist", "train", "--smoke", "--runs-dir", str(runs), *extra]


def _grid(runs: Path, *extra: str) -> list[str]:
    return ["minigrid", "train", "--smoke", "--runs-dir", str(runs), *extra]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One finished run per trainer (tiny LSTM models), shared by the tests below."""
    runs = tmp_path_factory.mktemp("trained") / "runs"
    assert main(_seq(runs, "--model.kind", "lstm", "--run-name", "seq")) == 0
    grid = _grid(runs, "--model.memory", "lstm", "--eval-episodes", "0", "--run-name", "grid")
    assert main(grid) == 0
    root = runs / "rim-cells"
    return {
        "runs": runs,
        "seq": root / "seq" / "checkpoints" / "last.pt",
        "grid": root / "grid" / "checkpoints" / "last.pt",
    }


# --- config values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["seqmnist", "train", "--model.input-dropout", "2.0"],
            "--model.input-dropout must be in [0, 1), got 2.0",
        ),
        (["seqmnist", "train", "--optim.lr", "0"], "--optim.lr must be > 0"),
        (["seqmnist", "train", "--epochs", "0"], "--epochs must be at least 1"),
        (["seqmnist", "train", "--model.num-units", "0"], "--model.num-units must be at least 1"),
        (
            ["seqmnist", "train", "--smoke", "--model.k-active", "10"],
            "--model.k-active (10) must be at most --model.num-units (3)",
        ),
        (
            ["seqmnist", "train", "--model.kind", "lstm", "--plot"],
            "--plot needs --model.kind rim",
        ),
        (["seqmnist", "train", "--data.train-limit", "0"], "--data.train-limit must be at least"),
        (["minigrid", "train", "--ppo.lr", "-1"], "--ppo.lr must be > 0, got -1.0"),
        (["minigrid", "train", "--ppo.discount", "1.5"], "--ppo.discount must be in [0, 1]"),
        (["minigrid", "train", "--ppo.recurrence", "5"], "--ppo.frames-per-proc (128)"),
        (["minigrid", "train", "--env.num-envs", "0"], "--env.num-envs must be at least 1"),
        (
            ["minigrid", "train", "--smoke", "--model.k-active", "10"],
            "--model.k-active (10) must be at most --model.num-units (4)",
        ),
        (["minigrid", "train", "--model.rnn-cell", "GRU"], "--model.rnn-cell GRU"),
        (
            ["minigrid", "train", "--env.env-id", "CartPole-v1"],
            "CartPole-v1 is not a MiniGrid environment",
        ),
        (["minigrid", "train", "--env.env-id", "MiniGrid-Nope-v0"], "unknown environment"),
        (["seqmnist", "train", "--threads", "0"], "--threads must be at least 1"),
    ],
)
def test_bad_training_values(tmp_path, capsys, argv, message):
    runs = tmp_path / "runs"
    _fail([*argv, "--runs-dir", str(runs)], capsys, message)
    _nothing_in(runs)


def test_explicit_flags_win_over_smoke(tmp_path):
    from compkit_utils.config import load
    from rim_cells.config import SeqMnistTrainConfig

    runs = tmp_path / "runs"
    argv = _seq(runs, "--model.kind", "lstm", "--model.lstm-hidden", "7", "--run-name", "r")
    assert main(argv) == 0
    cfg = load(runs / "rim-cells" / "r" / "config.json", SeqMnistTrainConfig)
    assert cfg.smoke
    assert cfg.model.lstm_hidden == 7  # the explicit flag
    assert cfg.model.embedding_size == 8  # a smoke default


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["minigrid", "visualize", "--tile-size", "0"], "--tile-size must be at least 1"),
        (["minigrid", "visualize", "--fps", "0"], "--fps must be > 0"),
        (["minigrid", "evaluate", "--episodes", "0"], "--episodes must be at least 1"),
        (["seqmnist", "evaluate", "--test-sizes", "1"], "--test-sizes must be at least 2"),
        (["plot-activations", "--index", "-1"], "--index must be at least 0"),
    ],
)
def test_bad_evaluation_values(tmp_path, capsys, argv, message):
    fake = tmp_path / "x.pt"
    fake.write_bytes(b"never read: the flags are checked first")
    out = tmp_path / "out"
    _fail([*argv, "--checkpoint", str(fake)], capsys, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--repeats", "0"], "--repeats must be at least 1, got 0"),
        (["--warmup", "-1"], "--warmup must be at least 0, got -1"),
        (["--k-active", "7"], "--k-active (7) must be at most --num-units (6)"),
        (["--sweep-units", "1"], "--sweep-units must be at least 2, got 1"),
    ],
)
def test_bad_bench_values(tmp_path, capsys, argv, message):
    out = tmp_path / "bench.json"
    _fail(["bench", "--quick", "--out", str(out), *argv], capsys, message)
    assert not out.exists()


# --- paths --------------------------------------------------------------------------------


def test_runs_dir_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "runs"
    blocker.write_text("a file in the way")
    _fail(_seq(blocker), capsys, f"--runs-dir {blocker} is a file")
    _fail(_grid(blocker), capsys, f"--runs-dir {blocker} is a file")
    assert blocker.read_text() == "a file in the way"


def test_runs_dir_under_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _fail(_seq(blocker / "runs"), capsys, f"{blocker} is a file, not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_unwritable_runs_dir(tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    real_access = os.access

    def no_write(path, mode, *args, **kwargs):  # tests run as root: simulate a read-only dir
        if Path(path) == runs and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", no_write)
    _fail(_seq(runs), capsys, f"--runs-dir {runs} is not writable")
    _fail(_grid(runs), capsys, f"--runs-dir {runs} is not writable")
    _nothing_in(runs)


def test_permission_error_while_creating_the_run_is_one_line(tmp_path, capsys, monkeypatch):
    """The directory looked writable, then creating the run failed (EACCES)."""
    runs = tmp_path / "runs"
    real_mkdir = pathlib.Path.mkdir

    def refuse(self, *args, **kwargs):
        if self.name == "r":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", refuse)
    err = _fail(_seq(runs, "--run-name", "r"), capsys, "cannot write")
    assert str(runs / "rim-cells" / "r") in err
    assert "Permission denied" in err
    _nothing_in(runs)


def test_output_file_in_a_missing_folder_under_a_file(tmp_path, capsys, checkpoints):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = ["seqmnist", "evaluate", "--checkpoint", str(checkpoints["seq"])]
    _fail([*argv, "--out", str(blocker / "eval.json")], capsys, "cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


# --- checkpoints --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["seqmnist", "evaluate"],
        ["plot-activations"],
        ["minigrid", "evaluate"],
        ["minigrid", "visualize"],
    ],
)
def test_missing_and_corrupt_checkpoints(tmp_path, capsys, command):
    missing = tmp_path / "missing.pt"
    _fail([*command, "--checkpoint", str(missing)], capsys, f"{missing}: file not found")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02 not a torch file")
    _fail([*command, "--checkpoint", str(corrupt)], capsys, f"{corrupt}: not a readable")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.pt"]


def test_checkpoint_of_the_other_trainer(capsys, checkpoints):
    argv = ["minigrid", "evaluate", "--checkpoint", str(checkpoints["seq"])]
    _fail(argv, capsys, "not a MiniGrid PPO checkpoint")


def test_resume_missing_and_corrupt(tmp_path, capsys):
    runs = tmp_path / "runs"
    _fail(_seq(runs, "--resume", "--run-name", "nope"), capsys, "--resume:")
    _fail(_grid(runs, "--resume", "--run-name", "nope"), capsys, "--resume:")
    _nothing_in(runs)
    for name in ("seq", "grid"):
        last = runs / "rim-cells" / name / "checkpoints" / "last.pt"
        last.parent.mkdir(parents=True)
        last.write_bytes(b"garbage")
    before = sorted(runs.rglob("*"))
    _fail(_seq(runs, "--resume", "--run-name", "seq"), capsys, "not a readable checkpoint")
    _fail(_grid(runs, "--resume", "--run-name", "grid"), capsys, "not a readable checkpoint")
    after = sorted(p for p in runs.rglob("*") if p.name != ".lock")
    assert after == before  # no config.json, metrics or checkpoints added


# --- run names ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../escape", "a/b", ".hidden", ""])
def test_bad_run_names(tmp_path, capsys, name):
    runs = tmp_path / "runs"
    _fail(_seq(runs, "--run-name", name), capsys, "--run-name")
    _fail(_grid(runs, "--run-name", name), capsys, "--run-name")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_finished_run_is_not_replaced(capsys, checkpoints):
    runs = checkpoints["runs"]
    for argv, ckpt in (
        (_seq(runs, "--model.kind", "lstm", "--run-name", "seq"), checkpoints["seq"]),
        (_grid(runs, "--model.memory", "lstm", "--run-name", "grid"), checkpoints["grid"]),
    ):
        run_dir = ckpt.parent.parent
        metrics = (run_dir / "metrics.jsonl").read_bytes()
        checkpoint = ckpt.read_bytes()
        _fail(argv, capsys, "already exists; pass --resume to continue it or a new --run-name")
        assert (run_dir / "metrics.jsonl").read_bytes() == metrics
        assert ckpt.read_bytes() == checkpoint


# --- concurrency --------------------------------------------------------------------------


def test_run_in_use_by_another_process(capsys, checkpoints):
    run_dir = checkpoints["seq"].parent.parent
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            "f = open(sys.argv[1], 'a')\n"
            "fcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(120)\n",
            str(run_dir / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        before = (run_dir / "metrics.jsonl").read_bytes()
        argv = _seq(checkpoints["runs"], "--model.kind", "lstm", "--run-name", "seq", "--resume")
        _fail([*argv, "--epochs", "2"], capsys, "is in use by another process")
        assert (run_dir / "metrics.jsonl").read_bytes() == before
    finally:
        holder.kill()
        holder.wait()


def test_version_comes_from_the_package_metadata():
    from importlib import metadata

    import rim_cells

    assert rim_cells.__version__ == metadata.version("rim-cells")
