"""Stage-2 CEM: the building blocks against hand-computed cases, the scorers, the searches.

The searches run with a toy decoder (a fixed list of programs chosen by the argmax of the
first latent coordinates), so the CEM mechanics are tested independently of stage 1.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from leaps_karel.learn.cem import (
    CemSearch,
    batch_of,
    initial_mean,
    is_solved,
    new_mean,
    select_elites,
    sigma_at,
)
from leaps_karel.learn.cem_config import PRESETS, TARGET_PROGRAMS, CemSettings
from leaps_karel.learn.cem_scoring import TargetScorer, TaskScorer, prefix_match
from leaps_karel.learn.random_search import RandomSearch

MAZE_SOLUTION = (
    "DEF run m( WHILE c( noMarkersPresent c) w( IFELSE c( rightIsClear c) i( turnRight i) "
    "ELSE e( WHILE c( not c( frontIsClear c) c) w( turnLeft w) e) move w) m)"
)
TOY_PROGRAMS = [
    "DEF run m( move m)",
    "DEF run m( move move m)",
    MAZE_SOLUTION,
    "DEF run m( turnLeft move m)",
    "DEF run m( m)",
]


def toy_decode(z: torch.Tensor) -> list[str]:
    """A deterministic 'decoder': the program indexed by the argmax of z[:, :5]."""
    return [TOY_PROGRAMS[int(i)] for i in z[:, : len(TOY_PROGRAMS)].argmax(dim=1)]


# ---------------------------------------------------------------------------- σ schedule
def test_sigma_schedule_hand_computed() -> None:
    s = PRESETS["stairclimber"]  # σ₀ 0.25, exponential decay to 0.1 over 500 steps
    gamma = (0.1 / 0.25) ** (1 / 500)
    assert gamma == pytest.approx(0.99817, abs=1e-5)
    assert sigma_at(1, s) == sigma_at(2, s) == 0.25
    assert sigma_at(3, s) == pytest.approx(0.25 * gamma)
    assert sigma_at(12, s) == pytest.approx(0.25 * gamma**10)
    assert sigma_at(502, s) == pytest.approx(0.1)
    assert sigma_at(900, s) == pytest.approx(0.1)
    harvester = PRESETS["harvester"]  # σ₀ 0.5: γ ≈ 0.99679
    assert (0.1 / harvester.sigma) ** (1 / 500) == pytest.approx(0.99679, abs=1e-5)
    for k in (1, 3, 700):
        assert sigma_at(k, PRESETS["topoff"]) == 0.25  # no decay


# ---------------------------------------------------------------------------- elites, mean
def test_elite_count_per_task_preset() -> None:
    expected = {
        "stairclimber": 2,
        "fourcorner": 13,
        "topoff": 3,
        "maze": 2,
        "cleanhouse": 2,
        "harvester": 3,
    }
    assert {task: PRESETS[task].elites for task in expected} == expected


def test_elite_selection_breaks_ties_by_program_text() -> None:
    returns = np.array([0.5, 1.1, 0.5, 0.01])
    texts = ["b", "a", "a", "z"]
    # ascending (return, text): (0.01, z)=3, (0.5, a)=2, (0.5, b)=0, (1.1, a)=1
    assert select_elites(returns, texts, 3).tolist() == [2, 0, 1]
    assert select_elites(returns, texts, 1).tolist() == [1]
    # by population index instead: (0.5, 0) before (0.5, 2)
    assert select_elites(returns, texts, 3, "index").tolist() == [0, 2, 1]


def test_new_mean_hand_computed() -> None:
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    r = np.array([0.1, 0.3])
    weighted = new_mean(z, r, "weighted_mean")
    assert weighted.tolist() == pytest.approx([0.1 / 0.40001, 0.3 / 0.40001], rel=1e-6)
    assert new_mean(z, r, "mean").tolist() == [0.5, 0.5]
    no_bonus = new_mean(z, r, "weighted_mean", weights_include_bonus=False)
    assert no_bonus.tolist() == pytest.approx([0.0, 0.2 / 0.20001], rel=1e-6)
    # every weight 0 without the bonus (only invalid/zero-score elites): the plain mean
    zero = new_mean(z, np.array([0.01, 0.1]), "weighted_mean", weights_include_bonus=False)
    assert zero.tolist() == [0.5, 0.5]


def test_initial_mean_and_world_batches() -> None:
    g = torch.Generator().manual_seed(0)
    maze = PRESETS["maze"]
    assert torch.equal(initial_mean(maze, g), torch.full((256,), 0.01))  # quirk: 0.01 · 1
    assert initial_mean(dataclasses.replace(maze, ones_value=1.0), g).tolist() == [1.0] * 256
    assert initial_mean(dataclasses.replace(maze, init="zeros"), g).abs().sum() == 0
    tiny = initial_mean(dataclasses.replace(maze, init="tiny_normal"), g)
    assert 0.05 < float(tiny.std()) < 0.15
    # the first batch used is the generator's second; a new one every 100 iterations
    assert [batch_of(k, maze) for k in (1, 100, 101, 200, 201)] == [1, 1, 2, 2, 3]
    first = dataclasses.replace(maze, skip_first_batch=False, regenerate_every=0)
    assert [batch_of(k, first) for k in (1, 500)] == [0, 0]


def test_stop_rule() -> None:
    s = PRESETS["maze"]
    assert not is_solved([1.1] * 9, s)
    assert is_solved([0.5] + [1.1] * 10, s)
    assert not is_solved([1.1] * 10 + [1.0], s)  # the current best must be 1.1
    assert not is_solved([1.1] * 5 + [1.0] + [1.1] * 4, s)  # the window mean must be 1.1


def test_settings_check() -> None:
    with pytest.raises(Exception, match="--n-elite"):
        dataclasses.replace(PRESETS["maze"], n_elite=17).check()
    with pytest.raises(Exception, match="rounds to 0 elites"):
        CemSettings(4, 0.05, 0.1, False, "zeros").check()


# ---------------------------------------------------------------------------- scorers
def test_task_scorer_cache_batches_and_fresh_worlds() -> None:
    scorer = TaskScorer("maze", seed=3, fresh_start=200)
    scorer.set_batch(1)
    first = scorer.score([MAZE_SOLUTION, MAZE_SOLUTION, "DEF run m( m)"])
    assert scorer.evaluations == 2  # the repeated program was executed once
    assert first[2] == 0.01
    assert first[0] == first[1] > 0.5
    scorer.score([MAZE_SOLUTION])
    assert scorer.evaluations == 2
    assert scorer.task is not None
    worlds_b1 = [w.key() for w in scorer.task.initial_worlds]
    # batch b holds worlds b·10 … b·10+9 of the seeded stream
    assert worlds_b1 == [w.key() for w in scorer.worlds(10, 10)]
    scorer.set_batch(2)
    scorer.score([MAZE_SOLUTION])
    assert scorer.evaluations == 3  # a new batch empties the cache
    assert worlds_b1 != [w.key() for w in scorer.task.initial_worlds]
    fresh = scorer.fresh(MAZE_SOLUTION, 100)
    assert fresh.valid
    assert fresh.value == pytest.approx(fresh.mean + 0.1)
    assert 0.75 < fresh.mean < 1.0  # ≈ 2/17 of worlds are unsolvable under the quirk


def test_prefix_match_hand_cases() -> None:
    assert prefix_match([1, 2, 3], []) == 0.0
    assert prefix_match([1], [1]) == 1.0
    assert prefix_match([1, 2, 3], [1, 2, 3]) == 1.0
    assert prefix_match([1, 2, 3, 4, 5], [1, 2, 9]) == pytest.approx(1 / 4)
    assert prefix_match([1, 2], [1, 2, 3, 4, 5]) == pytest.approx(1 / 4)


def test_target_scorer_rewards_the_target_most() -> None:
    target = TARGET_PROGRAMS["test1"]
    scorer = TargetScorer(target, seed=0)
    scorer.set_batch(1)
    scores = scorer.score([target, "DEF run m( turnRight move m)", "DEF run m( m)"])
    assert scores[0] == pytest.approx(1.1)
    assert 0.1 <= scores[1] < 1.1
    assert scores[2] == 0.01
    assert scorer.fresh(target, 20).value == pytest.approx(1.1)


# ---------------------------------------------------------------------------- searches
def _run(search: CemSearch | RandomSearch) -> list[tuple[int, str, float, float, int]]:
    out = []
    while not search.done:
        it = search.step()
        out.append((it.iteration, it.best_program, it.best_score, it.sigma, it.episodes))
    return out


def test_cem_solves_the_toy_maze_and_stops_early() -> None:
    s = dataclasses.replace(PRESETS["maze"], max_iterations=60)
    search = CemSearch(s, toy_decode, TaskScorer("maze", seed=0, fresh_start=1000), seed=0)
    curve = _run(search)
    assert search.best_program == MAZE_SOLUTION
    assert len(curve) < 60
    assert is_solved(search.history, s)
    assert curve[-1][4] == len(curve) * (16 + 1) * 10  # (P + 1) · 10 episodes per iteration


def test_cem_is_deterministic_given_a_seed() -> None:
    s = dataclasses.replace(PRESETS["harvester"], max_iterations=8)

    def curve(seed: int) -> list:
        return _run(CemSearch(s, toy_decode, TaskScorer("harvester", seed=seed), seed=seed))

    assert curve(1) == curve(1)
    mus = []
    for _ in range(2):
        search = CemSearch(s, toy_decode, TaskScorer("harvester", seed=1), seed=1)
        _run(search)
        mus.append(search.mu)
    assert torch.equal(mus[0], mus[1])


def test_cem_state_dict_resumes_exactly() -> None:
    s = dataclasses.replace(PRESETS["stairclimber"], max_iterations=10)
    whole = _run(CemSearch(s, toy_decode, TaskScorer("stairclimber", seed=2), seed=2))
    first = CemSearch(s, toy_decode, TaskScorer("stairclimber", seed=2), seed=2)
    part = [first.step() for _ in range(4)]
    second = CemSearch(s, toy_decode, TaskScorer("stairclimber", seed=2), seed=99)
    second.load_state_dict(first.state_dict())
    rest = _run(second)
    joined = [(i.iteration, i.best_program, i.best_score, i.sigma, i.episodes) for i in part]
    assert joined + rest == whole


def test_reestimated_sigma_follows_the_elites() -> None:
    s = dataclasses.replace(PRESETS["fourcorner"], max_iterations=3, reestimate_sigma=True)
    search = CemSearch(s, toy_decode, TaskScorer("fourcorner", seed=0), seed=0)
    first = search.step()
    assert first.sigma == 0.5
    estimated = search.sigma  # the elites' mean per-dimension std, at least final_sigma
    assert s.final_sigma <= estimated < 0.75
    assert search.step().sigma == estimated


def test_random_search_keeps_the_best_and_counts_episodes() -> None:
    s = dataclasses.replace(PRESETS["maze"], population=8, n_elite=1, max_iterations=205)
    search = RandomSearch(s, toy_decode, TaskScorer("maze", seed=0), seed=0)
    curve = _run(search)
    assert search.best_program == MAZE_SOLUTION  # 1 in 5 toy programs: found at once
    within_batch = [c[2] for c in curve[:100]]
    assert within_batch == sorted(within_batch)  # the incumbent never gets worse
    # 8 per iteration, plus one re-evaluation of the incumbent per new batch of worlds
    assert curve[-1][4] == (8 * len(curve) + (len(curve) - 1) // 100) * 10
    assert math.isclose(curve[-1][2], search.best_score)


def test_task_scorer_workers_give_the_same_returns() -> None:
    programs = [*TOY_PROGRAMS, "DEF run m( turnRight move move m)", "DEF run m( putMarker m)"]
    one = TaskScorer("topoff", seed=1)
    two = TaskScorer("topoff", seed=1, workers=2)
    one.set_batch(1)
    two.set_batch(1)
    try:
        assert two.score(programs).tolist() == one.score(programs).tolist()
    finally:
        two.close()
