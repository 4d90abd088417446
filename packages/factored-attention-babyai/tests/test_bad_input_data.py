from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from factored_attention_babyai.cli import main

from .conftest import generate_args


def one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("factored-attention-babyai: error:"), err
    for needle in needles:
        assert needle in err, err
    return err


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_inspect_accepts_a_good_dataset(
    small_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", "--data", str(small_dataset), "--vlimit", "1", "--tlimit", "2"]) == 0
    assert "checksums OK" in capsys.readouterr().out


def test_missing_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--data", str(tmp_path / "nope")]) == 2
    one_line_error(capsys, "--data", "not found")
    assert main(["inspect", "--data", str(tmp_path)]) == 2  # a folder, but no dataset
    one_line_error(capsys, "dataset_info.json")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_dataset(
    small_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(small_dataset, copy)
    data = bytearray((copy / "data.hdf5").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "data.hdf5").write_bytes(bytes(data))
    before = snapshot(copy)
    assert main(["inspect", "--data", str(copy), "--vlimit", "1"]) == 2
    one_line_error(capsys, "data.hdf5", "corrupt")
    array_record = next((copy / "tfds").rglob("*train.array_record*"))
    array_record.write_bytes(b"truncated")
    assert main(["inspect", "--data", str(copy), "--vlimit", "1", "--format", "tfds"]) == 2
    one_line_error(capsys, "array_record", "corrupt")
    assert snapshot(copy).keys() == before.keys()


def test_per_goal_larger_than_the_dataset(
    small_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", "--data", str(small_dataset), "--vlimit", "1", "--per-goal", "5"]) == 2
    one_line_error(capsys, "--per-goal 5", "--per-goal 1 or less")
    assert main(["inspect", "--data", str(small_dataset), "--vlimit", "1", "--tlimit", "3"]) == 2
    one_line_error(capsys, "--tlimit 3")


def test_unknown_goal(small_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "inspect",
        "--data",
        str(small_dataset),
        "--vlimit",
        "1",
        "--goals",
        "go to the red door",
    ]
    assert main(args) == 2
    one_line_error(capsys, "--goals", "'go to the red door'")


def test_generate_out_dir_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(generate_args(blocker, "--per-goal", "1")) == 2
    one_line_error(capsys, "--out-dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_generate_bad_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(generate_args(tmp_path / "d", "--per-goal", "0")) == 2
    one_line_error(capsys, "--per-goal")
    assert main(generate_args(tmp_path / "d", "--n-procs", "0")) == 2
    one_line_error(capsys, "--n-procs")
    assert not (tmp_path / "d").exists()


def test_generate_refuses_to_clobber(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_dataset, copy)
    before = snapshot(copy)
    assert main(generate_args(copy, "--per-goal", "1", "--block-size", "256")) == 2
    one_line_error(capsys, "--overwrite")
    # --resume with other settings than the finished dataset's
    assert main(generate_args(copy, "--per-goal", "2", "--block-size", "256", "--resume")) == 2
    one_line_error(capsys, "other settings")
    assert snapshot(copy) == before


def test_resume_with_other_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    (out / ".shards").mkdir(parents=True)
    (out / ".shards" / "manifest.json").write_text('{"per_goal": 99}\n')
    before = snapshot(out)
    assert main(generate_args(out, "--per-goal", "1", "--resume")) == 2
    one_line_error(capsys, "manifest.json", "different settings")
    assert snapshot(out) == before
