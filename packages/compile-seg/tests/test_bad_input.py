"""Bad input of every kind: exit status 2, one stderr line naming the fix, nothing left behind.

The tests run as root on CI machines, where permission bits do not stop writes, so a
read-only runs directory is simulated by patching ``os.access`` (the up-front check) or
``os.mkdir`` (a failure while the run directory is made).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from compile_seg.cli import main
from compkit_utils.runs import open_run
from compkit_utils.testing import one_error_line, tree

TINY = ["--batch-size", "8", "--hidden-dim", "8", "--latent-dim", "4", "--heldout-size", "8"]


def _fails(capsys, tmp_path: Path, args: list[str], runs_dir: Path | None = None) -> str:
    """Run ``compile-seg args``; check status 2, one line, an unchanged tmp_path."""
    before = tree(tmp_path)
    runs = ["--runs-dir", str(runs_dir if runs_dir is not None else tmp_path / "runs")]
    if args[0] == "bench":  # bench writes no run directory
        runs = []
    assert main([*args, *runs, "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    message = one_error_line(captured.err, "compile-seg")
    assert tree(tmp_path) == before, "a failed command left files behind"
    return message


def _train(tmp_path: Path, *args: str, name: str = "r") -> Path:
    runs = ["--runs-dir", str(tmp_path / "runs"), "--run-name", name]
    assert main(["train", *TINY, "--iterations", "2", *runs, "--device", "cpu", *args]) == 0
    return tmp_path / "runs" / "compile-seg" / name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--iterations", "0"], "--iterations must be at least 1, got 0"),
        (["train", "--log-interval", "0"], "--log-interval must be at least 1, got 0"),
        (["train", "--checkpoint-every", "0"], "--checkpoint-every must be at least 1"),
        (["train", "--heldout-size", "0"], "--heldout-size must be at least 1, got 0"),
        (["train", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["train", "--max-segment-len", "1"], "--max-segment-len must be at least 2, got 1"),
        (["train", "--num-segments", "6"], "--num-symbols (5) must be at least --num-segments"),
        (["train", "--hidden-dim", "0"], "--hidden-dim must be at least 1, got 0"),
        (["train", "--latent-dim", "-3"], "--latent-dim must be at least 1, got -3"),
        (["train", "--temp-b", "0"], "--temp-b must be > 0, got 0.0"),
        (["train", "--learning-rate", "0"], "--learning-rate must be > 0, got 0.0"),
        (["train", "--learning-rate", "nan"], "--learning-rate must be > 0, got nan"),
        (["train", "--loss.beta-b", "-0.1"], "--loss.beta-b must be at least 0, got -0.1"),
        (["train", "--loss.prior-rate", "0"], "--loss.prior-rate must be > 0, got 0.0"),
        (["train", "--seed", "-1"], "--seed must be at least 0, got -1"),
        (["train", "--threads", "0"], "--threads must be at least 1, got 0"),
        (["train", "--smoke", "--iterations", "0"], "--iterations must be at least 1, got 0"),
        (["evaluate"], "pass --checkpoint PATH"),
        (["evaluate", "--smoke", "--num-samples", "0"], "--num-samples must be at least 1"),
        (["evaluate", "--smoke", "--num-figure", "-1"], "--num-figure must be at least 0"),
        (["bench", "--repeats", "0"], "--repeats must be at least 1, got 0"),
        (["bench", "--warmup", "-1"], "--warmup must be at least 0, got -1"),
        (["bench", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["bench", "--threads", "0"], "--threads must be at least 1, got 0"),
    ],
)
def test_config_values(tmp_path, capsys, args, message) -> None:
    assert _fails(capsys, tmp_path, args).startswith(message)


def test_unavailable_device(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = tree(tmp_path)
    assert main(["train", "--device", "cuda", "--runs-dir", str(tmp_path / "runs")]) == 2
    message = one_error_line(capsys.readouterr().err, "compile-seg")
    assert message.startswith("--device cuda: CUDA is not available here; use --device cpu")
    assert tree(tmp_path) == before


# --- paths ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["train", *TINY], ["evaluate", "--smoke"]])
def test_runs_dir_is_a_file(tmp_path, capsys, command) -> None:
    blocker = tmp_path / "runs"
    blocker.write_text("not a directory")
    message = _fails(capsys, tmp_path, command, runs_dir=blocker)
    assert message.startswith(f"--runs-dir {blocker} is a file, not a directory")
    message = _fails(capsys, tmp_path, command, runs_dir=blocker / "sub")
    assert message.startswith(f"--runs-dir {blocker / 'sub'}: {blocker} is a file")


def test_read_only_runs_dir_is_refused_up_front(tmp_path, capsys, monkeypatch) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != runs and real_access(p, mode))
    message = _fails(capsys, tmp_path, ["train", *TINY], runs_dir=runs)
    assert message == f"--runs-dir {runs} is not writable; pass a writable directory"


def test_read_only_runs_dir_at_write_time(tmp_path, capsys, monkeypatch) -> None:
    runs = tmp_path / "runs"  # an existing directory in which nothing can be created
    runs.mkdir()
    real_mkdir = os.mkdir

    def mkdir(path, mode=0o777, **kwargs):
        if Path(path).parent == runs:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_mkdir(path, mode, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    message = _fails(capsys, tmp_path, ["train", *TINY], runs_dir=runs)
    assert message == (
        f"cannot write {runs / 'compile-seg'}: Permission denied; check its permissions or "
        "pass a writable --runs-dir"
    )


def test_disk_full_while_checkpointing_leaves_nothing(tmp_path, capsys, monkeypatch) -> None:
    from compkit_utils import checkpoints

    def full(path, state):
        raise OSError(errno.ENOSPC, "No space left on device", os.fspath(path))

    monkeypatch.setattr(checkpoints, "save_checkpoint", full)
    message = _fails(capsys, tmp_path, ["train", *TINY, "--iterations", "2"])
    assert message.startswith("cannot write ")
    assert message.endswith(
        ": No space left on device; free some disk space or pass a --runs-dir on another disk"
    )


# --- checkpoints ------------------------------------------------------------------------


def test_evaluate_missing_corrupt_and_foreign_checkpoints(tmp_path, capsys) -> None:
    missing = tmp_path / "missing.pt"
    message = _fails(capsys, tmp_path, ["evaluate", "--checkpoint", str(missing)])
    assert message == f"--checkpoint {missing}: not found; pass an existing file or directory"
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    message = _fails(capsys, tmp_path, ["evaluate", "--checkpoint", str(corrupt)])
    assert message.startswith(f"{corrupt}: not a readable checkpoint")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    message = _fails(capsys, tmp_path, ["evaluate", "--checkpoint", str(foreign)])
    assert message.startswith(f"{foreign}: not a compkit checkpoint")
    empty_run = tmp_path / "empty_run"
    empty_run.mkdir()
    message = _fails(capsys, tmp_path, ["evaluate", "--checkpoint", str(empty_run)])
    assert message.startswith(f"{empty_run}/checkpoints/last.pt: checkpoint not found")


def test_resume_without_a_checkpoint(tmp_path, capsys) -> None:
    message = _fails(capsys, tmp_path, ["train", *TINY, "--resume"])
    assert message.startswith("--resume: no train run with checkpoints/last.pt under")
    message = _fails(capsys, tmp_path, ["train", *TINY, "--resume", "--run-name", "nope"])
    assert message.startswith("--resume: ")
    assert "nope/checkpoints/last.pt not found" in message


def test_resume_from_a_corrupt_checkpoint(tmp_path, capsys) -> None:
    run = _train(tmp_path)
    (run / "checkpoints" / "last.pt").write_bytes(b"truncated")
    args = ["train", *TINY, "--iterations", "4", "--run-name", "r", "--resume"]
    message = _fails(capsys, tmp_path, args)
    assert message.startswith(f"{run}/checkpoints/last.pt: not a readable checkpoint")


def test_resume_with_other_settings_or_a_finished_run(tmp_path, capsys) -> None:
    run = _train(tmp_path)
    args = ["train", *TINY, "--run-name", "r", "--resume"]
    message = _fails(capsys, tmp_path, [*args, "--iterations", "4", "--latent-dim", "6"])
    assert message.startswith(f"--resume: {run}/checkpoints/last.pt was trained with a ")
    message = _fails(capsys, tmp_path, [*args, "--iterations", "2"])
    assert message.startswith(f"--resume: {run} already finished 2 steps; raise --iterations")


# --- run names and concurrency ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../../escape", "--run-name '../../escape' must be a plain name without path"),
        ("a/b", "--run-name 'a/b' must be a plain name without path separators"),
        ("..", "--run-name '..' must not start with '.'"),
        (".hidden", "--run-name '.hidden' must not start with '.'"),
        ("", "--run-name must not be empty"),
    ],
)
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_bad_run_names(tmp_path, capsys, name, message, command) -> None:
    args = [command, "--run-name", name, *(TINY if command == "train" else ["--smoke"])]
    assert _fails(capsys, tmp_path, args).startswith(message)


def test_existing_run_name_needs_resume(tmp_path, capsys) -> None:
    run = _train(tmp_path)
    message = _fails(capsys, tmp_path, ["train", *TINY, "--run-name", "r"])
    assert message == (
        f"run {run} already exists; pass --resume to continue it or a new --run-name"
    )


def test_a_run_in_use_is_refused(tmp_path, capsys) -> None:
    run = _train(tmp_path)
    args = ["train", *TINY, "--iterations", "4", "--run-name", "r", "--resume"]
    with open_run(
        "compile-seg", "train", seed=0, runs_dir=tmp_path / "runs", run_name="r", resume=True
    ):
        message = _fails(capsys, tmp_path, args)
    assert message.startswith(f"run {run} is in use by another process")
