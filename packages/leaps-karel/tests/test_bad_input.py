"""Bad input to every ``leaps-karel`` command: exit status 2, one stderr line, nothing left behind.

Config values, paths (a file in the way, an unwritable folder, a full disk) and damaged
datasets (a corrupt shard, flipped bytes, a truncated file, a missing ``dataset_info.json``, a
checksum mismatch). Tests run as root, so permission errors are simulated with monkeypatch.
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from typing import Any

import pytest

from compkit_utils.errors import UserError
from leaps_karel import dataset as ds
from leaps_karel import dataset_shards
from leaps_karel.cli import main
from leaps_karel.config import DatasetConfig
from leaps_karel.reader import KarelProgramDataset

SOLUTION = "DEF run m( pickMarker move m)"
GEN = ["generate-dataset", "--num-programs", "12", "--shard-size", "5"]
SMALL = DatasetConfig(num_programs=12)  # what GEN generates (seed 123, gzip)


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The single stderr line of a failed command."""
    err = capsys.readouterr().err
    assert err.startswith("leaps-karel: error: "), err
    assert err.count("\n") == 1, err
    return err


def leftovers(folder: Path) -> list[str]:
    """Temporary files anywhere under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.tmp"))


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated") / "ds"
    assert main([*GEN, "--out-dir", str(out)]) == 0
    return out


def copy_dataset(source: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("data.hdf5", "id.txt", "dataset_info.json"):
        (target / name).write_bytes((source / name).read_bytes())
    return target


def flip(path: Path, start: int, count: int) -> None:
    data = bytearray(path.read_bytes())
    for i in range(start, min(start + count, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# --- config values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "--program", SOLUTION, "--workers", "-1"], "--workers must be at least 0"),
        (["evaluate", "--program", SOLUTION, "--num-worlds", "0"], "--num-worlds must be at"),
        (["evaluate", "--program", SOLUTION, "--seed", "-3"], "--seed must be at least 0"),
        (["evaluate", "--program", SOLUTION, "--task", "nope"], "--task must be one of"),
        (["run", "--program", SOLUTION, "--index", "-1"], "--index must be at least 0"),
        (["run", "--program", SOLUTION, "--options.budget", "-5"], "--options.budget must"),
        (["bench", "--seconds", "0"], "--seconds must be > 0"),
        (["bench", "--tasks", "maze", "nope"], "--tasks must be one of"),
        ([*GEN, "--n-procs", "0"], "--n-procs must be at least 1"),
        ([*GEN, "--shard-size", "0"], "--shard-size must be at least 1"),
        (["generate-dataset", "--num-programs", "0"], "--num-programs must be at least 1"),
        ([*GEN, "--height", "2"], "--height must be at least 3"),
        ([*GEN, "--wall-prob", "1.0"], "--wall-prob must be in [0, 1)"),
        ([*GEN, "--seed", "-1"], "--seed must be at least 0"),
        ([*GEN, "--min-demo-length", "30"], "--min-demo-length (30) must be <="),
        ([*GEN, "--max-demo-generation-trial", "5"], "--max-demo-generation-trial (5)"),
    ],
)
def test_bad_config_values_exit_2(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # a default output folder would land here
    monkeypatch.setenv("COMPKIT_DATA_DIR", str(tmp_path / "data"))
    assert main(args) == 2
    assert message in error_line(capsys)
    assert tree(tmp_path) == []


# --- paths -------------------------------------------------------------------------------------


def test_out_dir_that_is_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("keep me")
    assert main([*GEN, "--out-dir", str(target)]) == 2
    assert f"--out-dir {target} is a file" in error_line(capsys)
    assert target.read_text() == "keep me"
    assert tree(tmp_path) == ["file"]


def test_out_dir_under_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert main([*GEN, "--out-dir", str(tmp_path / "file" / "ds")]) == 2
    assert "is a file, not a directory" in error_line(capsys)
    assert tree(tmp_path) == ["file"]


def test_unwritable_out_dir(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: Path(p) != locked and real(p, mode, **kw)
    )
    assert main([*GEN, "--out-dir", str(locked)]) == 2
    assert "is not writable" in error_line(capsys)
    assert main([*GEN, "--out-dir", str(locked / "sub")]) == 2
    assert "is not writable" in error_line(capsys)
    assert tree(tmp_path) == ["locked"]


def test_permission_denied_while_writing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EACCES from the file system itself (a folder that turned read-only mid-run)."""
    real = io.FileIO

    class Denied(real):
        def __init__(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> None:
            if "shard_" in str(file) and mode != "r":
                raise PermissionError(errno.EACCES, "Permission denied", str(file))
            super().__init__(file, mode, *args, **kwargs)

    monkeypatch.setattr(io, "FileIO", Denied)
    out = tmp_path / "ds"
    assert main([*GEN, "--out-dir", str(out)]) == 2
    line = error_line(capsys)
    assert "Permission denied" in line
    assert "choose a writable --out-dir" in line
    assert leftovers(tmp_path) == []


# --- full disk ---------------------------------------------------------------------------------


class FullDisk(io.FileIO):
    """Each file can grow to ``LIMIT`` bytes, then writes fail with ENOSPC."""

    LIMIT = 100_000

    def write(self, data: Any) -> int:
        if self.tell() + len(memoryview(data).cast("B")) > self.LIMIT:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


@pytest.mark.parametrize(
    ("limit", "procs", "where"),
    [
        (100_000, "1", "shard_000000.hdf5"),  # a shard cannot be written
        (100_000, "2", "shard_00000"),  # ... by a worker process
        (500_000, "1", "data.hdf5"),  # the shards fit, the merged file does not
    ],
)
def test_full_disk_exits_2_leaves_no_temporaries_and_resumes(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    generated: Path,
    limit: int,
    procs: str,
    where: str,
) -> None:
    args = [*GEN, "--compression", "none", "--out-dir", str(tmp_path / "ds")]
    monkeypatch.setattr(FullDisk, "LIMIT", limit)
    monkeypatch.setattr(io, "FileIO", FullDisk)
    assert main([*args, "--n-procs", procs]) == 2
    line = error_line(capsys)
    assert "disk full" in line
    assert where in line
    assert "rerun with --resume" in line
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "ds" / "data.hdf5").exists()
    assert not (tmp_path / "ds" / "dataset_info.json").exists()
    monkeypatch.undo()  # space freed
    assert main([*args, "--resume"]) == 0
    plain, packed = (
        KarelProgramDataset(tmp_path / "ds", validate=True),
        KarelProgramDataset(generated),
    )
    assert plain.ids == packed.ids


# --- damaged datasets ----------------------------------------------------------------------------


def interrupted_generation(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two finished shards of GEN in ``out``, then an interruption."""
    real = dataset_shards._run_shard
    calls: list[int] = []

    def interrupted(job: dict) -> dict:
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(job["shard"])
        return real(job)

    monkeypatch.setattr(ds, "_run_shard", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ds.generate_dataset(out, SMALL, shard_size=5)
    monkeypatch.setattr(ds, "_run_shard", real)
    assert leftovers(out) == []


def test_corrupt_shard_is_refused_on_resume(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "ds"
    interrupted_generation(out, monkeypatch)
    shard = out / ".shards" / "shard_000001.hdf5"
    flip(shard, shard.stat().st_size // 2, 64)
    assert main([*GEN, "--out-dir", str(out), "--resume"]) == 2
    line = error_line(capsys)
    assert f"{shard}: corrupt shard" in line
    assert "delete it and rerun" in line
    assert "--resume" in line
    assert not (out / "dataset_info.json").exists()
    assert not (out / "data.hdf5").exists()
    assert leftovers(tmp_path) == []
    shard.unlink()  # the fix the message names
    assert main([*GEN, "--out-dir", str(out), "--resume"]) == 0


def test_shard_without_checksum_is_regenerated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard renamed into place just before an interruption has no checksum: redone."""
    out = tmp_path / "ds"
    interrupted_generation(out, monkeypatch)
    (out / ".shards" / "checksums.json").write_text("{}")
    report = ds.generate_dataset(out, SMALL, shard_size=5, resume=True)
    assert report.shards_reused == 0
    assert KarelProgramDataset(out, validate=True).ids


@pytest.mark.parametrize("command", ["verify", "resume", "reader"])
def test_flipped_bytes_in_data_file_are_reported_as_corrupt(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, generated: Path, command: str
) -> None:
    folder = copy_dataset(generated, tmp_path / "ds")
    data = folder / "data.hdf5"
    flip(data, data.stat().st_size // 2, 256)
    if command == "reader":
        with pytest.raises(UserError, match=r"data\.hdf5: corrupt.*delete it and rerun"):
            KarelProgramDataset(folder, validate=True)
        return
    args = ["verify-dataset", "--path", str(folder)]
    if command == "resume":
        args = [*GEN, "--out-dir", str(folder), "--resume"]
    assert main(args) == 2
    line = error_line(capsys)
    assert f"{data}: corrupt" in line
    assert "missing" not in line
    assert "delete it and rerun" in line
    assert leftovers(tmp_path) == []


def test_flipped_bytes_found_without_checksums(tmp_path: Path, generated: Path) -> None:
    """Without dataset_info.json, validate=True still reads every (gzip-checked) chunk."""
    folder = copy_dataset(generated, tmp_path / "ds")
    (folder / "dataset_info.json").unlink()
    data = folder / "data.hdf5"
    flip(data, data.stat().st_size // 2, 4096)
    with pytest.raises(UserError, match=r"data\.hdf5: corrupt"):
        KarelProgramDataset(folder, validate=True)


@pytest.mark.parametrize("with_info", [True, False])
def test_truncated_data_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, generated: Path, with_info: bool
) -> None:
    folder = copy_dataset(generated, tmp_path / "ds")
    data = folder / "data.hdf5"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    if with_info:
        assert main(["verify-dataset", "--path", str(folder)]) == 2
        assert f"{data}: corrupt" in error_line(capsys)
    else:
        (folder / "dataset_info.json").unlink()
        with pytest.raises(UserError, match=r"data\.hdf5: corrupt or not an HDF5 file"):
            KarelProgramDataset(folder)


def test_missing_dataset_info(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, generated: Path
) -> None:
    folder = copy_dataset(generated, tmp_path / "ds")
    (folder / "dataset_info.json").unlink()
    assert main(["verify-dataset", "--path", str(folder)]) == 2
    assert "no dataset_info.json" in error_line(capsys)
    # A data.hdf5 without dataset_info.json is not a finished generation.
    assert main([*GEN, "--out-dir", str(folder), "--resume"]) == 2
    assert "not written by a finished generation" in error_line(capsys)
    assert tree(folder) == ["data.hdf5", "id.txt"]


def test_checksum_mismatch_of_id_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, generated: Path
) -> None:
    folder = copy_dataset(generated, tmp_path / "ds")
    ids = folder / "id.txt"
    ids.write_text(ids.read_text() + "\n")
    assert main(["verify-dataset", "--path", str(folder)]) == 2
    line = error_line(capsys)
    assert f"{ids}: corrupt, SHA-256" in line
    assert "delete it and rerun" in line


def test_resume_regenerates_a_deleted_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, generated: Path
) -> None:
    folder = copy_dataset(generated, tmp_path / "ds")
    (folder / "data.hdf5").unlink()
    assert main([*GEN, "--out-dir", str(folder), "--resume"]) == 0
    assert (folder / "data.hdf5").read_bytes() == (generated / "data.hdf5").read_bytes()
    assert main(["verify-dataset", "--path", str(folder)]) == 0
    assert "checksums match" in capsys.readouterr().out
    # Complete and intact: --resume has nothing to do.
    assert main([*GEN, "--out-dir", str(folder), "--resume"]) == 0
    assert leftovers(tmp_path) == []


def _dying_shard(job: dict) -> dict:
    """A worker killed while writing shard 1 (module level: picklable for the pool)."""
    from leaps_karel import dataset_shards

    if job["shard"] == 1:
        os._exit(1)
    return dataset_shards._run_shard(job)


def test_dead_worker_exits_2_without_hanging_or_leftovers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "ds"
    monkeypatch.setattr(ds, "_run_shard", _dying_shard)
    assert main([*GEN, "--out-dir", str(out), "--n-procs", "2"]) == 2
    line = error_line(capsys)
    assert "worker process died" in line
    assert "--resume" in line
    assert leftovers(tmp_path) == []
    monkeypatch.undo()
    assert main([*GEN, "--out-dir", str(out), "--resume"]) == 0
