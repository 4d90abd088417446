"""``experiment`` refuses bad input with one line, exit 2, and no experiment folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from compkit_utils.testing import one_error_line
from factored_attention_babyai.cli import main

PROG = "factored-attention-babyai"


def _refused(capsys: pytest.CaptureFixture[str], runs: Path, argv: list[str]) -> str:
    assert main(["experiment", "--runs-dir", str(runs), *argv]) == 2
    message = one_error_line(capsys.readouterr().err, PROG)
    assert not runs.exists() or list(runs.rglob("*")) == [], list(runs.rglob("*"))
    return message


def test_missing_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = _refused(capsys, tmp_path / "runs", ["--data", str(tmp_path / "nope")])
    assert "--data" in message
    message = _refused(capsys, tmp_path / "runs", [])  # neither --data nor --generate
    assert "--data is required" in message
    assert "generate --per-goal 1020" in message
    message = _refused(capsys, tmp_path / "runs", ["--preset", "paper"])
    assert "generate --per-goal 10000" in message


def test_dataset_too_small(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    message = _refused(capsys, tmp_path / "runs", ["--data", str(tiny_dataset)])
    assert "holds 1 demonstrations per ID goal" in message
    assert "generate --per-goal 1020" in message


def test_not_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    message = _refused(capsys, tmp_path / "runs", ["--data", str(folder)])
    assert "not a readable dataset" in message


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--preset", "huge"], "--preset"),
        (["--generate", "--data", "."], "either --data DIR"),
        (["--generate", "--seeds", "5-3"], "seeds"),
        (["--generate", "--workers", "0"], "--workers"),
    ],
)
def test_bad_flags(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert needle in _refused(capsys, tmp_path / "runs", argv)
