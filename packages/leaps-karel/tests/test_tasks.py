from __future__ import annotations

import pytest

from compkit_utils.errors import UserError
from leaps_karel.bench import evaluate_reference
from leaps_karel.dsl import to_ids
from leaps_karel.tasks import TASKS, Task, make
from leaps_karel.tasks.registry import CleanHouse, StairClimber, get_spec
from leaps_karel.world import World

REFERENCE_SOLUTIONS = {
    "stairclimber": "DEF run m( WHILE c( noMarkersPresent c) w( turnLeft move turnRight move w) m)",
    "fourcorner": "DEF run m( WHILE c( noMarkersPresent c) w( WHILE c( frontIsClear c) w( move w) "
    "IF c( noMarkersPresent c) i( putMarker turnLeft move i) w) m)",
    "topoff": "DEF run m( WHILE c( frontIsClear c) w( IF c( markersPresent c) i( putMarker i) "
    "move w) m)",
    "harvester": "DEF run m( WHILE c( markersPresent c) w( WHILE c( markersPresent c) w( "
    "pickMarker move w) turnRight move turnLeft WHILE c( markersPresent c) w( pickMarker move w) "
    "turnLeft move turnRight w) m)",
}


def _fixture_task(case) -> Task:
    worlds = [World.from_dict(w) for w in case["init_states"]]
    return Task.from_worlds(get_spec(case["task"]), worlds)


def test_fixed_world_tasks_refuse_more_rollouts(task_cases):
    task = _fixture_task(task_cases[0])
    with pytest.raises(UserError, match="10 fixed initial worlds"):
        task.evaluate("DEF run m( move m)", num_worlds=11)


def test_fixture_returns_rewards_and_final_worlds(task_cases):
    returns = rollouts = 0
    for case in task_cases:
        task = _fixture_task(case)
        for prog in case["programs"]:
            assert task.evaluate(prog["program"]) == pytest.approx(
                prog["return_with_bonus"], abs=1e-6
            ), (case["task"], prog["program"])
            returns += 1
            if not prog["valid"]:
                assert task.scores(prog["program"]) is None
                continue
            scores = task.scores(prog["program"])
            assert scores is not None
            for i, expected in enumerate(prog["rollouts"]):
                got = task.rollout(prog["program"], i)
                assert got.actions == expected["actions"]
                assert got.rewards == pytest.approx(expected["rewards"], abs=1e-6)
                assert got.world.to_dict() == expected["world_out"]
                assert got.score == pytest.approx(scores[i], abs=1e-12)
                rollouts += 1
    assert (returns, rollouts) == (272, 2540)


def test_reference_implementation_in_bench_agrees(task_cases):
    for case in task_cases:
        task = _fixture_task(case)
        for prog in case["programs"][:6]:
            assert evaluate_reference(task, prog["program"]) == pytest.approx(
                prog["return_with_bonus"], abs=1e-6
            )


def test_fixture_metadata_matches_our_generators(task_cases):
    cleanhouse = get_spec("cleanhouse")
    assert isinstance(cleanhouse, CleanHouse)
    assert len(cleanhouse.candidates) == 73
    for case in task_cases:
        spec = get_spec(case["task"])
        assert (spec.height, spec.width) == (case["height"], case["width"])
        for world, meta in zip(case["init_states"], case["init_metadata"], strict=True):
            w = World.from_dict(world)
            if case["task"] == "cleanhouse":
                assert {tuple(p) for p in meta["expected_marker_positions"]} == set(
                    cleanhouse.candidates
                )
                cells = spec.context(w, make("cleanhouse").options)["cells"]
                assert sorted(divmod(c, w.width) for c in cells) == sorted(
                    tuple(p) for p in meta["marker_positions"]
                )
            if case["task"] == "topoff":
                marked = {(10, c) for c in range(12) if w.markers_at(10, c)}
                assert marked == {tuple(p) for p in meta["not_expected_marker_positions"]}
            if case["task"] in ("fourcorner", "harvester"):
                assert w == make(case["task"]).initial_worlds[0]


@pytest.mark.parametrize("name", sorted(REFERENCE_SOLUTIONS))
def test_reference_solutions_solve_fresh_worlds(name):
    task = make(name, seed=3, topoff_last_cell_marker=False)
    assert task.evaluate(REFERENCE_SOLUTIONS[name]) == pytest.approx(1.1)


def test_topoff_quirk_variant_and_option():
    original = make("topoff", seed=0)
    intended = make("topoff", seed=0, topoff_last_cell_marker=False)
    assert all(w.markers_at(10, 10) == 1 for w in original.initial_worlds)
    assert all(w.markers_at(10, 10) == 0 for w in intended.initial_worlds)
    assert original.evaluate(REFERENCE_SOLUTIONS["topoff"]) < 1.1


def test_harvester_lag_and_short_rollout_quirks():
    task = make("harvester")
    assert task.evaluate("DEF run m( pickMarker move pickMarker m)") == pytest.approx(1 / 36 + 0.1)
    no_lag = task.replace_options(marker_total_lag=False)
    assert no_lag.evaluate("DEF run m( pickMarker move pickMarker m)") == pytest.approx(
        2 / 36 + 0.1
    )
    assert task.evaluate("DEF run m( pickMarker m)") == pytest.approx(0.1)
    keep_short = task.replace_options(short_rollouts_score_zero=False, marker_total_lag=False)
    assert keep_short.evaluate("DEF run m( pickMarker m)") == pytest.approx(1 / 36 + 0.1)


def test_stairclimber_pays_only_the_first_arrival_as_last_action():
    task = make("stairclimber", seed=0, num_worlds=1)
    w = task.initial_worlds[0]
    goal = next(i for i, m in enumerate(w.markers) if m)
    solution = REFERENCE_SOLUTIONS["stairclimber"]
    assert task.evaluate(solution, num_worlds=1) == pytest.approx(1.1)
    # Continue after arriving: the last action is not the arrival, so the score is 0.
    assert task.evaluate(solution.replace(" w) m)", " w) turnLeft m)"), 1) == 0.1
    penalised = task.replace_options(stairclimber_off_stairs_penalty=True)
    assert penalised.evaluate("DEF run m( turnLeft move move m)", 1) == pytest.approx(-0.9)
    assert w.pos != goal


def test_generators_are_seeded_and_well_formed():
    for name in TASKS:
        a, b = make(name, seed=5, num_worlds=4), make(name, seed=5, num_worlds=4)
        assert a.initial_worlds == b.initial_worlds
    mazes = make("maze", seed=1, num_worlds=20).initial_worlds
    assert len({w.key() for w in mazes}) > 5
    for w in mazes:
        free = [i for i, x in enumerate(w.walls) if not x]
        assert len(free) == 17
        assert w.agent == (6, 1, 1)
        assert sum(w.markers) == 1
        seen, stack = {w.pos}, [w.pos]  # the maze is connected
        while stack:
            cell = stack.pop()
            for d in range(4):
                nxt = w.neighbours[4 * cell + d]
                if nxt >= 0 and nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        assert len(seen) == 17
    stairs = get_spec("stairclimber")
    assert isinstance(stairs, StairClimber)
    for w in make("stairclimber", seed=2, num_worlds=20).initial_worlds:
        r, c, d = w.agent
        goal = divmod(next(i for i, m in enumerate(w.markers) if m), w.width)
        assert d == 1
        assert (r, c) in stairs.tops
        assert goal in stairs.tops
        assert goal[1] > c
    for w in make("cleanhouse", seed=4, num_worlds=10).initial_worlds:
        ones = [divmod(i, w.width) for i, m in enumerate(w.markers) if m == 1]
        assert len(ones) == 10
        assert set(ones) <= set(CleanHouse().candidates)
        assert w.markers_at(2, 12) == 2
        assert w.agent == (1, 13, 2)


def test_task_inputs_and_errors():
    task = make("maze", seed=0)
    text = "DEF run m( move move m)"
    assert task.evaluate([*to_ids(text), 50, 50]) == task.evaluate(text)
    assert task.evaluate([0, 1, 2, 3, 50]) == 0.01
    assert task.evaluate("DEF run m( move") == 0.01
    assert task.evaluate([0, 1, 2, 99]) == 0.01
    assert make("FOURCORNERS").name == "fourcorner"
    with pytest.raises(UserError, match="unknown task 'karel'"):
        make("karel")
    with pytest.raises(UserError, match="unknown task option"):
        make("maze", colour=1)
    many = make("maze", seed=0, num_worlds=2)
    assert len(many.scores(text, num_worlds=12) or []) == 12
