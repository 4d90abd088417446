from __future__ import annotations

import functools
import random

import pytest

from leaps_karel import dsl
from leaps_karel.dsl import ParseError, Program, parse, to_text
from leaps_karel.interpreter import (
    Mode,
    compile_program,
    execute,
    execute_reference,
    program_source,
    replay,
)
from leaps_karel.interpreter_reference import _reference_raw
from leaps_karel.world import World, bordered_room

MODES = ("compiled", "reference")


def _run(kind, program, world, budget=220, mode: Mode = "no_crash"):
    fn = execute if kind == "compiled" else execute_reference
    return fn(program, world, budget, mode=mode)


@pytest.mark.parametrize("kind", MODES)
def test_all_fixture_cases_no_crash(interpreter_cases, kind):
    assert len(interpreter_cases) == 955
    for case in interpreter_cases:
        world = World.from_dict(case["world_in"])
        expected = case["no_crash"]
        r = _run(kind, case["program"], world)
        assert r.actions == expected["actions"], case["case"]
        assert r.world.to_dict() == expected["world_out"], case["case"]
        assert r.n == expected["n_final"], case["case"]
        assert r.finished == expected["finished"], case["case"]
        assert r.status == ("ok" if expected["finished"] else "budget")
        assert World.from_dict(case["world_in"]) == world  # input not modified


@pytest.mark.parametrize("kind", MODES)
def test_all_fixture_cases_crash_mode(interpreter_cases, kind):
    for case in interpreter_cases:
        world = World.from_dict(case["world_in"])
        expected = case["crash_mode_dataset_interpreter"]
        try:
            r = _run(kind, case["program"], world, mode="crash")
        except ParseError:
            assert expected["status"] == "parse_error", case["case"]
            continue
        assert (r.status, r.actions) == (expected["status"], expected["actions"]), case["case"]


# The budget test vectors of spec §6.2 (open 6×6 room, agent facing a far wall).
BUDGET_VECTORS = [
    ("DEF run m( turnLeft m)", 1, 2, True),
    ("DEF run m( turnLeft turnLeft m)", 2, 5, True),
    ("DEF run m( turnLeft turnLeft turnLeft m)", 3, 8, True),
    ("DEF run m( WHILE c( frontIsClear c) w( turnLeft w) m)", 217, 221, False),
    ("DEF run m( WHILE c( frontIsClear c) w( turnLeft turnLeft w) m)", 108, 221, False),
    ("DEF run m( WHILE c( frontIsClear c) w( turnLeft turnLeft turnLeft w) m)", 93, 221, False),
    ("DEF run m( REPEAT R=19 r( turnLeft r) m)", 19, 22, True),
    ("DEF run m( REPEAT R=19 r( REPEAT R=19 r( turnLeft r) r) m)", 195, 221, False),
    (
        "DEF run m( WHILE c( frontIsClear c) w( IF c( markersPresent c) i( pickMarker i) "
        "turnLeft w) m)",
        43,
        221,
        False,
    ),
    (
        "DEF run m( WHILE c( frontIsClear c) w( IFELSE c( markersPresent c) i( pickMarker i) "
        "ELSE e( turnLeft e) w) m)",
        72,
        221,
        False,
    ),
    ("DEF run m( WHILE c( not c( markersPresent c) c) w( turnLeft w) m)", 217, 221, False),
]


@pytest.mark.parametrize(("text", "num_actions", "n", "finished"), BUDGET_VECTORS)
def test_budget_vectors_of_the_spec(text, num_actions, n, finished):
    world = bordered_room(8, 8, (3, 3, 1))
    r = execute(text, world)
    assert (len(r.actions), r.n, r.finished) == (num_actions, n, finished)


def test_blocked_moves_turn_the_agent_around():
    r = execute("DEF run m( move move move move move m)", bordered_room(8, 8, (3, 3, 1)))
    assert r.actions == [0] * 5
    assert r.n == 14
    assert r.finished
    assert r.world.agent == (3, 5, 3)


def _random_cond(rng, depth=0):
    if depth < 2 and rng.random() < 0.2:
        return dsl.Not(_random_cond(rng, depth + 1))
    return dsl.Prim(rng.choice(dsl.CONDITIONS))


def _random_block(rng, depth):
    return tuple(_random_stmt(rng, depth) for _ in range(rng.randint(1, 4)))


def _random_stmt(rng, depth):
    r = rng.random()
    if depth > 3 or r < 0.45:
        return dsl.Action(rng.choice(dsl.ACTIONS))
    if r < 0.6:
        return dsl.While(_random_cond(rng), _random_block(rng, depth + 1))
    if r < 0.7:
        return dsl.Repeat(rng.randint(0, 19), _random_block(rng, depth + 1))
    if r < 0.85:
        return dsl.If(_random_cond(rng), _random_block(rng, depth + 1))
    return dsl.IfElse(
        _random_cond(rng), _random_block(rng, depth + 1), _random_block(rng, depth + 1)
    )


def test_compiled_matches_reference_on_random_programs_and_budgets(interpreter_cases):
    rng = random.Random(0)
    worlds = [World.from_dict(c["world_in"]) for c in interpreter_cases[:60:3]]
    for _ in range(250):
        program = Program(_random_block(rng, 0))
        budget = rng.choice([0, 1, 2, 3, 5, 8, 13, 21, 40, 80, 220])
        world = rng.choice(worlds)
        modes: list[Mode] = ["no_crash"]
        if "not c( not" not in to_text(program):
            modes.append("crash")
        for mode in modes:
            a = execute(program, world, budget, mode=mode)
            b = execute_reference(program, world, budget, mode=mode)
            assert (a.actions, a.n, a.status, a.world) == (b.actions, b.n, b.status, b.world), (
                to_text(program),
                budget,
                mode,
            )
            count_only = compile_program(program, budget=budget, mode=mode, record=False)
            w = world.copy()
            status = {"ok": 0, "budget": 1, "timeout": 1, "crash": 2}[a.status]
            ref_delta = _reference_delta(program, world, budget, mode)
            assert count_only(w) == (len(a.actions), a.n, status, ref_delta)
            assert w == a.world


def _reference_delta(program, world, budget, mode):
    return _reference_raw(program, mode, budget, False, world.copy())[3]


def test_last_marker_delta_is_reported():
    world = bordered_room(5, 5, (2, 2, 0))
    assert compile_program("DEF run m( putMarker m)")(world.copy())[3] == 1
    assert compile_program("DEF run m( pickMarker m)")(world.copy())[3] == 0
    assert compile_program("DEF run m( putMarker move m)")(world.copy())[3] == 0
    assert compile_program("DEF run m( putMarker pickMarker m)", record=False)(world)[3] == -1


def test_deeply_nested_program_falls_back_to_the_tree_walker():
    text = "DEF run m( " + "WHILE c( frontIsClear c) w( " * 30 + "move" + " w)" * 30 + " m)"
    world = bordered_room(8, 8, (3, 3, 1))
    a = execute(text, world)
    b = execute_reference(text, world)
    assert (a.actions, a.n, a.finished) == (b.actions, b.n, b.finished)
    assert isinstance(compile_program(text), functools.partial)  # Python's nesting limit


def test_replay_and_source():
    world = bordered_room(6, 6, (2, 2, 1))
    r = execute("DEF run m( move putMarker turnLeft m)", world)
    states = replay(world, r.actions)
    assert len(states) == 4
    assert states[-1] == r.world
    assert states[0] == world
    src = program_source(parse("DEF run m( move m)"))
    assert "def _run" in src
    with pytest.raises(ValueError, match="budget"):
        compile_program("DEF run m( move m)", budget=-1)
    with pytest.raises(ParseError):
        execute("DEF run m( move", world)


def test_history_records_states_and_perceptions():
    world = World.from_text(["#####", "#...#", "#####"], (1, 1, 1))
    r = execute("DEF run m( move putMarker move move m)", world, history=True)
    assert r.states is not None
    assert len(r.states) == 5
    assert r.states[0] == world
    assert r.states[-1] == r.world
    assert r.state_tensors().shape == (5, 3, 5, 16)
    assert r.perceptions()[:, 0].tolist() == [True, True, True, False, True]
    crashed = execute("DEF run m( move putMarker move move m)", world, mode="crash", history=True)
    assert crashed.status == "crash"
    assert crashed.states is not None
    assert len(crashed.states) == 4
    assert crashed.states[-1] == crashed.world
    with pytest.raises(ValueError, match="history=True"):
        execute("DEF run m( move m)", world).state_tensors()


def test_non_contiguous_checks_stop_at_the_first_failing_value():
    from leaps_karel.interpreter_codegen import _first_fail, _NoCrashGen

    assert _first_fail(5, (0, 2, 4), 6) == 7
    assert _first_fail(1, (0, 2, 6), 6) == 7
    gen = _NoCrashGen(budget=6)
    gen.static = None
    gen.pending = ["C", "I", "I", "C", "I", "I", "C"]
    gen.flush()
    assert gen.lines == ["    if n > 2: raise _Stop(_first_fail(n, (0, 2, 4), 6))", "    n += 4"]
