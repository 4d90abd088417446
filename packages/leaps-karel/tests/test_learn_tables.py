"""The table commands: zero-shot grids (fast) and the three tables end to end (slow: each
starts a sweep worker process)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch  # noqa: F401  (the `learn` extra is in the test environment)

from compkit_utils.testing import one_error_line, tree
from leaps_karel.cli import main
from leaps_karel.learn.tables import scaled_spec, zero_shot
from leaps_karel.tasks import Options

MAZE_SOLUTION = (
    "DEF run m( WHILE c( noMarkersPresent c) w( IFELSE c( rightIsClear c) i( turnRight i) "
    "ELSE e( WHILE c( not c( frontIsClear c) c) w( turnLeft w) e) move w) m)"
)
TOPOFF_SOLUTION = (
    "DEF run m( WHILE c( frontIsClear c) w( IF c( markersPresent c) i( putMarker i) move w) m)"
)


@pytest.mark.parametrize("task", ["stairclimber", "fourcorner", "topoff", "maze", "harvester"])
def test_tasks_scale_to_100x100(task: str) -> None:
    spec = scaled_spec(task, 100)
    assert (spec.height, spec.width) == (100, 100)
    world = spec.generate(np.random.default_rng(0), Options())
    assert (world.height, world.width) == (100, 100)


def test_cleanhouse_cannot_scale() -> None:
    assert scaled_spec("cleanhouse", 100) is None


def test_zero_shot_needs_a_larger_budget_on_large_grids() -> None:
    # the wall follower solves every 20x20 maze once the budget allows the walk
    assert zero_shot("maze", MAZE_SOLUTION, 20, 4, 100_000, seed=0) >= 0.75
    assert zero_shot("maze", MAZE_SOLUTION, 20, 4, 220, seed=0) <= 0.5
    assert zero_shot("topoff", TOPOFF_SOLUTION, 30, 3, 100_000, seed=0) > 0.9
    assert zero_shot("maze", "DEF run m( m)", 20, 2, 220, seed=0) == 0.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["table3", "--seeds", "3-1"], "--seeds"),
        (["table3", "--tasks", "nope"], "--tasks must be one of"),
        (["table-reconstruction", "--targets", "test9"], "--targets must be one of"),
        (["table9", "--size", "4"], "--size must be at least 8"),
        (["table3", "--weights", "w.safetensors", "--random-decoder"], "w.safetensors"),
    ],
)
def test_table_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    before = tree(tmp_path)
    assert main([*args, "--runs-dir", str(tmp_path)]) == 2
    assert message in one_error_line(capsys.readouterr().err, "leaps-karel")
    assert tree(tmp_path) == before


@pytest.fixture(scope="module")
def table3_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tables")
    argv = ["table3", "--smoke", "--seeds", "0", "--workers", "1", "--runs-dir", str(root)]
    assert main([*argv, "--run-name", "t3"]) == 0
    return root / "leaps-karel" / "t3"


@pytest.mark.slow
def test_table3_writes_results(table3_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads((table3_run / "results.json").read_text())
    row = data["rows"]["maze"]
    assert row["published"] == [1.0, 0.0]
    assert row["cem_fresh"]["n"] == 1
    assert row["hc_fresh"]["n"] == 1  # the search command is installed: its column is there
    assert len(row["programs"]) == 1
    text = (table3_run / "results.md").read_text()
    assert "| maze |" in text
    assert "compkit report" in text
    # rerunning the same table reuses the finished searches
    root = table3_run.parent.parent
    argv = ["table3", "--smoke", "--seeds", "0", "--workers", "1", "--runs-dir", str(root)]
    assert main([*argv, "--run-name", "t3"]) == 0
    assert "0 run(s)" in capsys.readouterr().out


@pytest.mark.slow
def test_table9_from_table3(table3_run: Path, tmp_path: Path) -> None:
    argv = ["table9", "--table3", str(table3_run), "--tasks", "maze", "cleanhouse", "--size",
            "16", "--worlds", "2", "--runs-dir", str(tmp_path), "--run-name", "t9"]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((tmp_path / "leaps-karel" / "t9" / "results.json").read_text())
    assert data["rows"]["maze"]["large_220"]["n"] == 1
    assert "cannot be built larger" in data["rows"]["cleanhouse"]["note"]


@pytest.mark.slow
def test_table_reconstruction(tmp_path: Path) -> None:
    argv = ["table-reconstruction", "--smoke", "--seeds", "0", "--workers", "1",
            "--runs-dir", str(tmp_path), "--run-name", "r"]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((tmp_path / "leaps-karel" / "r" / "results.json").read_text())
    assert data["rows"]["test1"]["published_with_bonus"] == 1.06
    assert 0.01 <= data["rows"]["test1"]["fresh_with_bonus"]["mean"] <= 1.1
