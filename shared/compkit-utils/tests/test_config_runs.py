from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from compkit_utils import config
from compkit_utils.errors import UserError
from compkit_utils.runs import check_resume_config, make_run_dir, resolve_runs_dir, write_config


@dataclasses.dataclass(frozen=True)
class Model:
    hidden: int = 64
    """Hidden size."""
    dist: Literal["gaussian", "concrete"] = "gaussian"
    """Latent distribution."""
    sizes: tuple[int, ...] = (14, 16)
    """Image sizes."""


@dataclasses.dataclass(frozen=True)
class Train:
    """Train a model."""

    model: Model = Model()
    lr: float = 1e-2
    """Learning rate."""
    out: Path | None = None
    """Output file."""
    seed: int = 0
    """Seed."""


def test_round_trip(tmp_path: Path) -> None:
    cfg = Train(model=Model(hidden=8, dist="concrete", sizes=(1, 2, 3)), lr=3, out=Path("x"))
    config.save(cfg, tmp_path / "c.json")
    assert config.load(tmp_path / "c.json", Train) == cfg


def test_unknown_and_wrong_fields_are_named(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": {"hiden": 3}}))
    with pytest.raises(UserError, match=r"unknown field 'model.hiden'") as info:
        config.load(path, Train)
    assert str(path) in str(info.value)
    path.write_text(json.dumps({"model": {"dist": "uniform"}}))
    with pytest.raises(UserError, match=r"'model.dist' is 'uniform'"):
        config.load(path, Train)
    path.write_text(json.dumps({"seed": "zero"}))
    with pytest.raises(UserError, match=r"'seed' should be int"):
        config.load(path, Train)
    path.write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        config.load(path, Train)


def test_run_dir_and_config_json(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RUNS_DIR", str(tmp_path / "r"))
    assert resolve_runs_dir() == tmp_path / "r"
    assert resolve_runs_dir(tmp_path / "explicit") == tmp_path / "explicit"
    run = make_run_dir("compkit-utils", "train", 3)
    assert run.parent == tmp_path / "r" / "compkit-utils"
    assert run.name.startswith("train__3__")
    again = make_run_dir("compkit-utils", "train", 3)
    assert again != run  # same second: a suffix keeps runs apart
    write_config(run, Train(), "compkit-utils")
    data = json.loads((run / "config.json").read_text())
    assert data["_meta"]["package"] == "compkit-utils"
    assert data["_meta"]["package_version"] == "0.1.0"
    assert config.from_dict(Train, data) == Train()


def _dispatch(cfg: Train) -> int:
    if cfg.seed < 0:
        raise UserError("--seed must be non-negative")
    return 0


def test_run_cli_exit_codes(capsys) -> None:
    commands = {"train": Train}
    assert config.run_cli(commands, _dispatch, ["train", "--seed", "1"], prog="demo") == 0
    assert config.run_cli(commands, _dispatch, ["train", "--seed", "-1"], prog="demo") == 2
    assert "demo: error: --seed must be non-negative" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        config.run_cli(commands, _dispatch, ["train", "--no-such-flag"], prog="demo")
    assert info.value.code == 2


def test_config_module_does_not_import_torch() -> None:
    code = "import compkit_utils.config, compkit_utils.runs, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_resume_run_dir(tmp_path: Path) -> None:
    from compkit_utils.runs import resume_run_dir

    with pytest.raises(UserError, match="no train run"):
        resume_run_dir("pkg", "train", tmp_path)
    older = tmp_path / "pkg" / "train__0__a" / "checkpoints"
    newer = tmp_path / "pkg" / "train__1__b" / "checkpoints"
    for folder in (older, newer):
        folder.mkdir(parents=True)
        (folder / "last.pt").write_bytes(b"x")
    import os

    os.utime(older / "last.pt", (1, 1))
    assert resume_run_dir("pkg", "train", tmp_path) == newer.parent
    assert resume_run_dir("pkg", "train", tmp_path, "train__0__a") == older.parent
    with pytest.raises(UserError, match=r"nope/checkpoints/last\.pt not found"):
        resume_run_dir("pkg", "train", tmp_path, "nope")


def test_check_resume_config_names_the_first_differing_field() -> None:
    saved = {"seed": 0, "data": {"dir": "/a", "n": 5}, "model": {"h": 8}, "epochs": 2}
    same = {"seed": 0, "data": {"dir": "/b", "n": 5}, "model": {"h": 8}, "epochs": 9}
    fields = ("seed", "data", "model")
    check_resume_config("ck.pt", saved, same, fields, ignore={"data": ["dir"]})
    with pytest.raises(UserError, match=r"ck.pt was trained with a different 'data'"):
        check_resume_config("ck.pt", saved, same, fields)  # the data dir now counts
    other = {**same, "model": {"h": 16}}
    with pytest.raises(UserError, match=r"different 'model' \(\{'h': 8\}\)"):
        check_resume_config("ck.pt", saved, other, fields, ignore={"data": ["dir"]})
