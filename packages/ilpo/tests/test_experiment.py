"""``ilpo experiment``: the smoke pipeline end to end, its rerun, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ilpo.cli import main

ROWS = ("ILPO", "BCO", "BC", "Demonstrator", "Expert (clean)", "Random")


def test_smoke_experiment_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["experiment", "--smoke", "--runs-dir", str(tmp_path), "--run-name", "x"]
    assert main(argv) == 0
    run = tmp_path / "ilpo" / "x"
    table = (run / "results.md").read_text()
    for name in ROWS:
        assert f"| {name} |" in table
    results = json.loads((run / "results.json").read_text())
    assert set(results["rows"]) == set(ROWS)
    assert results["rows"]["ILPO"]["n"] == 2
    assert (run / "curves.png").stat().st_size > 1000
    for sweep in ("arn", "bc", "bco"):
        assert len(list((run / "ilpo" / "sweeps" / sweep).glob("seed=*"))) == 2
    capsys.readouterr()
    # rerun: every stage is reused
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "0 run(s)" in out
    assert "2 reused" in out
    assert "expert ppo" not in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["--env", "Pong-v5"], "--env"), (["--seeds", "5-3"], "--seeds")],
)
def test_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    runs = tmp_path / "runs"
    assert main(["experiment", "--smoke", "--runs-dir", str(runs), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("ilpo: error:")
    assert fragment in err[0]
    assert not runs.exists() or not any(runs.iterdir())
