"""`prepare_generation_dir`: what an existing output folder of a sharded generator means."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compkit_utils.datasets.generation import MANIFEST, prepare_generation_dir
from compkit_utils.errors import UserError

SETTINGS = {"seed": 1, "per_goal": 2}
OUTPUTS = ("data.hdf5", "tfds")


def prepare(out: Path, *, settings=SETTINGS, overwrite=False, resume=False) -> bool:
    return prepare_generation_dir(
        out, settings, outputs=OUTPUTS, overwrite=overwrite, resume=resume
    )


def test_a_new_folder_gets_the_manifest(tmp_path: Path) -> None:
    assert prepare(tmp_path / "out") is False
    assert json.loads((tmp_path / "out" / ".shards" / MANIFEST).read_text()) == SETTINGS


def test_an_interrupted_generation_resumes_only_with_resume_and_the_same_settings(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    prepare(out)
    with pytest.raises(UserError, match="interrupted generation; pass --resume"):
        prepare(out)
    with pytest.raises(UserError, match="different settings"):
        prepare(out, settings={**SETTINGS, "seed": 2}, resume=True)
    assert prepare(out, resume=True) is True


def test_a_finished_dataset_is_refused_and_overwrite_clears_everything(tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare(out)
    (out / "data.hdf5").write_bytes(b"x")
    (out / "tfds").mkdir()
    (out / "tfds" / "part").write_bytes(b"x")
    (out / "dataset_info.json").write_text("{}")
    with pytest.raises(UserError, match="already holds a generated dataset"):
        prepare(out, resume=True)
    assert prepare(out, overwrite=True) is False
    assert sorted(p.name for p in out.iterdir()) == [".shards"]


def test_a_stray_data_file_and_a_file_as_folder_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "data.hdf5").write_bytes(b"x")
    with pytest.raises(UserError, match="not written by a finished generation"):
        prepare(out)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        prepare(tmp_path / "file")
    assert not (out / ".shards").exists()
