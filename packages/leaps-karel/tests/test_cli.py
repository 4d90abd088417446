from __future__ import annotations

import json

import pytest

from leaps_karel.cli import main

SOLUTION = "DEF run m( WHILE c( noMarkersPresent c) w( turnLeft move turnRight move w) m)"


def test_tasks_lists_the_six(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in ("stairclimber", "fourcorner", "topoff", "maze", "cleanhouse", "harvester"):
        assert name in out


def test_evaluate_program_and_file(capsys, tmp_path):
    assert main(["evaluate", "--task", "stairclimber", "--program", SOLUTION]) == 0
    assert capsys.readouterr().out.startswith("1.100000\t")
    progs = tmp_path / "progs.txt"
    progs.write_text(f"% comment\n{SOLUTION}\n\nDEF run m( m)\n")
    args = ["evaluate", "--task", "stairclimber", "--program-file", str(progs), "--per-rollout"]
    assert main(args) == 2
    assert "progs.txt: program 2" in capsys.readouterr().err
    assert main([*args, "--allow-invalid"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("1.100000")
    assert out[2].startswith("0.010000")
    assert "invalid program" in out[3]


def test_evaluate_rejects_malformed_program(capsys):
    assert main(["evaluate", "--task", "harvester", "--program", "DEF run m( move m"]) == 2
    err = capsys.readouterr().err
    assert "--program: parse error at token 4" in err
    assert "--allow-invalid" in err


def test_run_on_task_and_world_file(capsys, tmp_path):
    assert main(["run", "--task", "stairclimber", "--program", SOLUTION, "--trace"]) == 0
    out = capsys.readouterr().out
    assert "step 1: turnLeft" in out
    assert "rollout score 1.000000" in out
    world = tmp_path / "w.json"
    world.write_text(json.dumps({"grid": ["#####", "#...#", "#####"], "agent": [1, 1, 1]}))
    assert main(["run", "--world", str(world), "--program", "DEF run m( move move move m)"]) == 0
    out = capsys.readouterr().out
    assert "3 actions, counter 8, status ok" in out
    args = [
        "run",
        "--world",
        str(world),
        "--mode",
        "crash",
        "--program",
        "DEF run m( move move move m)",
    ]
    assert main(args) == 0
    assert "status crash" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--program", "DEF run m( move"], "parse error at token 4"),
        (["run", "--program", "DEF run m( jump m)"], "unknown token"),
        (["run", "--program", ""], "no program given"),
        (["evaluate", "--task", "karel", "--program", SOLUTION], "--task must be one of"),
        (["run", "--task", "nope", "--program", SOLUTION], "--task must be one of"),
        (["evaluate", "--program-file", "/nonexistent/p.txt"], "--program-file /nonexistent/p.txt"),
        (["evaluate", "--program", SOLUTION, "--num-worlds", "0"], "--num-worlds"),
        (["bench", "--tasks", "karel"], "--tasks must be one of"),
    ],
)
def test_bad_input_exits_2(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("leaps-karel: error:")
    assert message in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"grid": ["###"]}', "expected an object with 'grid'"),
        ('{"grid": ["###", "#.", "###"], "agent": [1, 1, 0]}', "row 1 has length 2"),
        ('{"grid": ["###", "#?#", "###"], "agent": [1, 1, 0]}', "unknown character '?'"),
        ('{"grid": ["###", "#.#", "###"], "agent": [0, 0, 0]}', "on a wall"),
        ('{"grid": ["###", "#.#", "###"], "agent": [1, 1]}', "'agent' must be [row, col, dir]"),
    ],
)
def test_malformed_world_files_exit_2(capsys, tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert main(["run", "--world", str(path), "--program", SOLUTION]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert message in err


def test_missing_world_file_exits_2(capsys, tmp_path):
    assert main(["run", "--world", str(tmp_path / "nope.json"), "--program", SOLUTION]) == 2
    assert "--world " in capsys.readouterr().err


def test_bench_runs_quickly(capsys):
    assert main(["bench", "--seconds", "0.02", "--tasks", "maze"]) == 0
    out = capsys.readouterr().out
    assert "interpreter actions/s" in out
    assert "task evaluations/s" in out
    assert "x |" in out
