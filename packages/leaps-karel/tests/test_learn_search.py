"""``leaps-karel search``: program-space neighbours, hill climbing, the command, bad input."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from compkit_utils.errors import UserError
from compkit_utils.testing import one_error_line, tree
from leaps_karel.cli import main
from leaps_karel.dsl import is_valid, parse, to_text
from leaps_karel.learn.cem_scoring import Score, TaskScorer
from leaps_karel.learn.neighbours import (
    Limits,
    Neighbourhood,
    longest_sequence,
    node_sites,
    program_depth,
    within_limits,
)
from leaps_karel.learn.search import StreamScorer, hill_climb
from leaps_karel.learn.search_plot import (
    best_return_curve,
    plot_best_return_panels,
    plot_best_return_vs_episodes,
)

NESTED = (
    "DEF run m( move WHILE c( frontIsClear c) w( IF c( not c( markersPresent c) c) i( "
    "REPEAT R=3 r( turnLeft r) i) move w) pickMarker m)"
)


def test_depth_sequence_and_sites_of_a_known_program() -> None:
    program = parse(NESTED)
    assert program_depth(parse("DEF run m( move m)")) == 1
    assert program_depth(program) == 4  # WHILE > IF > REPEAT > turnLeft
    assert longest_sequence(program) == 3
    assert (
        longest_sequence(parse("DEF run m( WHILE c( leftIsClear c) w( " + "move " * 5 + "w) m)"))
        == 5
    )
    sites = node_sites(program)
    # statements: move, WHILE, IF, REPEAT, turnLeft, move, pickMarker; conditions: WHILE, IF
    assert [k for k, _, _ in sites].count("stmt") == 7
    assert [k for k, _, _ in sites].count("cond") == 2
    assert max(n for _, _, n in sites) == 3
    assert within_limits(program, Limits())
    assert not within_limits(program, Limits(max_depth=3))
    assert not within_limits(program, Limits(max_tokens=20))


@pytest.mark.parametrize(
    "limits", [Limits(), Limits(max_depth=2, max_sequence=3, max_tokens=20)], ids=["paper", "tight"]
)
def test_neighbours_are_valid_programs_within_the_limits(limits: Limits) -> None:
    hood = Neighbourhood(seed=5, limits=limits)
    kinds_changed = {"stmt": 0, "cond": 0}
    for _ in range(40):
        program = hood.random_program()
        assert within_limits(program, limits)
        for _ in range(50):
            neighbour = hood.neighbour(program)
            text = to_text(neighbour)
            assert is_valid(text), text
            assert parse(text) == neighbour
            assert neighbour != program
            assert within_limits(neighbour, limits), text
            assert len(text.split()) <= limits.max_tokens
            assert program_depth(neighbour) <= limits.max_depth
            assert longest_sequence(neighbour) <= limits.max_sequence
            old, new = node_sites(program), node_sites(neighbour)
            kinds_changed["cond" if len(old) == len(new) and _only_cond(old, new) else "stmt"] += 1
            program = neighbour
    # both kinds of node get replaced
    assert kinds_changed["cond"] > 20
    assert kinds_changed["stmt"] > 500


def _only_cond(old: list, new: list) -> bool:
    return [(k, p) for k, p, _ in old] == [(k, p) for k, p, _ in new]


def test_neighbourhood_is_deterministic_given_the_seed() -> None:
    def draws(seed: int) -> list[str]:
        hood = Neighbourhood(seed=seed)
        program = hood.random_program()
        out = []
        for _ in range(30):
            program = hood.neighbour(program)
            out.append(to_text(program))
        return out

    assert draws(3) == draws(3)
    assert draws(3) != draws(4)


def _climb(task: str, seed: int, episodes: int, **kw: object):
    scorer = TaskScorer(task, seed, fresh_start=1000)
    return hill_climb(scorer, Neighbourhood(seed), max_evaluations=episodes // 10, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("task", "budget"), [("maze", 20_000), ("stairclimber", 60_000)])
@pytest.mark.parametrize("seed", [0, 1])
def test_hill_climbing_solves_an_easy_task_within_the_budget(
    task: str, budget: int, seed: int
) -> None:
    result = _climb(task, seed, budget)
    assert result.solved, (result.best_program, result.best)
    assert result.best.mean == pytest.approx(1.0)
    assert result.episodes <= budget
    assert result.episodes == 10 * result.evaluations


def test_the_curve_never_decreases_and_the_budget_holds() -> None:
    records: list[dict] = []
    result = _climb(
        "harvester", 0, 12_000, log_every=20, record=records.append, regenerate_every=300
    )
    assert result.episodes == 12_000
    assert not result.solved
    assert result.distinct < result.evaluations  # repeated programs count, as in CEM
    episodes = [r["search/episodes"] for r in records]
    best = [r["search/best_return"] for r in records]
    assert episodes == sorted(episodes)
    assert len(records) > 30
    assert all(b2 >= b1 for b1, b2 in itertools.pairwise(best))
    assert best[-1] == result.best.mean > 0.3
    # new initial states every 300 of the 1,200 evaluations
    assert {r["search/batch"] for r in records} == {1, 2, 3, 4, 5}
    assert result.restarts > 0
    assert result.moves > 0
    curve = [b for _, b in result.curve]
    assert curve == sorted(curve)


def _run(tmp_path: Path, *extra: str) -> tuple[dict, list[str]]:
    args = ["search", "--task", "harvester", "--episodes", "3000", "--neighbours", "30"]
    assert main([*args, "--runs-dir", str(tmp_path), "--fresh-worlds", "20", *extra]) == 0
    (run,) = (tmp_path / "leaps-karel").iterdir()
    results = json.loads((run / "results.json").read_text())
    metrics = (run / "metrics.jsonl").read_text().splitlines()
    return results, metrics


def test_search_command_writes_results_and_is_deterministic(tmp_path: Path) -> None:
    first, metrics = _run(tmp_path / "a", "--seed", "2")
    again, metrics_again = _run(tmp_path / "b", "--seed", "2")
    other, _ = _run(tmp_path / "c", "--seed", "3")
    for r in (first, again, other):
        r.pop("seconds_this_process")
    assert first == again
    assert metrics == metrics_again
    assert first != other
    assert first["method"] == "hill_climbing"
    assert first["task"] == "harvester"
    assert first["episodes"] <= 3000
    for part in ("in_sample", "fresh"):
        block = first[part]
        assert block["return_with_bonus"] == pytest.approx(block["return_without_bonus"] + 0.1)
    assert first["fresh"]["worlds"] == 20
    assert first["in_sample"]["worlds"] == 10
    assert is_valid(first["program"])
    assert first["valid"]
    assert (tmp_path / "a" / "leaps-karel").is_dir()
    curve = [json.loads(line) for line in metrics[:-1]]
    assert curve[-1]["search/best_return"] == first["in_sample"]["return_without_bonus"]
    assert curve[-1]["search/episodes"] == first["episodes"] == 3000
    final = json.loads(metrics[-1])
    assert final["eval/fresh"] == first["fresh"]["return_without_bonus"]


def test_confirm_solved_is_on_by_default_and_can_be_turned_off(tmp_path: Path) -> None:
    args = ["search", "--task", "maze", "--episodes", "3000", "--seed", "0", "--quiet"]
    assert main([*args, "--runs-dir", str(tmp_path / "off"), "--no-confirm-solved"]) == 0
    assert main([*args, "--runs-dir", str(tmp_path / "on")]) == 0
    off, on = (
        json.loads(
            next((tmp_path / d / "leaps-karel").iterdir()).joinpath("results.json").read_text()
        )
        for d in ("off", "on")
    )
    assert (off["confirm_solved"], off["confirm_batches"]) == (False, 0)
    assert off["solved_early"]
    assert off["in_sample"]["worlds"] == 10
    assert off["confirmation_evaluations"] == 0
    assert off["episodes"] < 3000  # stopped at the first program that solved its 10 worlds
    assert (on["confirm_solved"], on["confirm_batches"]) == (True, 10)
    assert on["confirmation_evaluations"] > 0
    assert on["failed_confirmations"] > 0
    assert on["fresh"]["first_world"] >= 10 * (on["in_sample"]["batch"] + 1)


def test_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--smoke", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "best program: DEF run m(" in out
    assert "fresh" in out


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--task", "nosuchtask"], "--task"),
        (["--episodes", "5"], "--episodes"),
        (["--episodes", "0"], "--episodes"),
        (["--neighbours", "0"], "--neighbours"),
        (["--max-tokens", "4"], "--max-tokens"),
        (["--regenerate-every", "1", "--episodes", "1000000"], "--regenerate-every"),
        (["--fresh-worlds", "0"], "--fresh-worlds"),
        (["--confirm-batches", "0"], "--confirm-batches"),
        (["--seed", "-1"], "--seed"),
    ],
)
def test_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], flag: str
) -> None:
    assert main(["search", *args, "--runs-dir", str(tmp_path / "runs")]) == 2
    assert flag in one_error_line(capsys.readouterr().err, "leaps-karel")
    assert tree(tmp_path) == set()


# ---------------------------------------------------------------------------- confirmation
P0 = "DEF run m( move m)"
P1 = "DEF run m( turnLeft m)"
P2 = "DEF run m( turnRight m)"


class _TableScorer:
    """Scores from a table ``(program, batch) -> return``; 0.3 for anything else."""

    worlds_per_eval = 10

    def __init__(self, table: dict[tuple[str, int], float]) -> None:
        self.table, self.batch, self.evaluations, self.batches = table, -1, 0, []

    def set_batch(self, batch: int) -> None:
        self.batch = batch
        self.batches.append(batch)

    def detail(self, text: str) -> Score:
        self.evaluations += 1
        value = self.table.get((text, self.batch), 0.3)
        return Score(value, value - 0.1, True)


class _ListHood:
    """Starts from P0; its neighbours are P1, P2, P0, P0, … in that order."""

    def __init__(self) -> None:
        self.next = iter([P1, P2])

    def random_program(self):
        return parse(P0)

    def neighbour(self, program):
        return parse(next(self.next, P0))


# P1 solves batch 1 only (overfits it); P2 solves batches 2, 3 and 4.
TABLE = {(P1, 1): 1.1, (P1, 2): 0.6, (P2, 2): 1.1, (P2, 3): 1.1, (P2, 4): 1.1}


def _table_climb(**kw: object):
    scorer = _TableScorer(TABLE)
    return scorer, hill_climb(scorer, _ListHood(), neighbours=5, **kw)  # type: ignore[arg-type]


def test_without_confirmation_the_first_solving_program_is_accepted() -> None:
    _, result = _table_climb(max_evaluations=100)
    assert result.solved
    assert result.best_program == P1
    assert result.evaluations == 2
    assert result.best_worlds == 10
    assert result.confirmations == result.failed_confirmations == 0


def test_a_solving_program_must_solve_the_next_batches() -> None:
    scorer, result = _table_climb(max_evaluations=100, confirm_batches=2)
    # P0 (batch 1), P1 solves batch 1 -> scored on batch 2: 0.6, fails; the search goes on
    # from P1 on batch 2; P2 solves batch 2 -> confirmed on batches 3 and 4
    assert scorer.batches == [1, 2, 3, 4]
    assert result.solved
    assert result.best_program == P2
    assert result.evaluations == 6
    assert result.episodes == 60  # confirmations are counted in the budget
    assert result.confirmations == 3
    assert result.failed_confirmations == 1
    assert result.moves == 2  # to P1 after its failed confirmation, then to P2
    assert (result.best_batch, result.best_worlds, result.last_batch) == (2, 30, 4)
    assert result.best.value == pytest.approx(1.1)
    # the overfitting P1 counts with its mean over batches 1 and 2 (return 0.75), not 1.0
    assert result.curve == [(10, pytest.approx(0.2)), (30, pytest.approx(0.75)), (60, 1.0)]


def test_a_solving_program_is_not_accepted_when_the_budget_ends_its_confirmation() -> None:
    _, result = _table_climb(max_evaluations=5, confirm_batches=2)
    assert not result.solved
    assert result.evaluations == 5
    assert result.best_program == P2
    assert result.best_worlds == 20  # solved batches 2 and 3; batch 4 was never scored
    assert result.failed_confirmations == 1


def test_stream_scorer_draws_the_worlds_of_the_task_scorer() -> None:
    stream, plain = StreamScorer("maze", 3), TaskScorer("maze", 3)
    for start in (10, 20, 60, 300, 40):  # forwards, a jump, then back (drawn again)
        ours, theirs = stream.worlds(start, 10), plain.worlds(start, 10)
        assert [(w.markers, w.walls, w.pos) for w in ours] == [
            (w.markers, w.walls, w.pos) for w in theirs
        ]


def test_confirmation_finds_a_maze_program_that_generalises() -> None:
    seed = 0

    def climb(confirm: int):
        scorer = StreamScorer("maze", seed, fresh_start=5000)
        result = hill_climb(
            scorer,
            Neighbourhood(seed),
            max_evaluations=5000,
            regenerate_every=1000,
            confirm_batches=confirm,
        )
        return result, scorer.fresh(result.best_program, 100)

    plain, plain_fresh = climb(0)
    confirmed, fresh = climb(10)
    # accepted at once, the program solves its 10 worlds but not all of 100 fresh ones
    assert plain.solved
    assert plain.best.mean == 1.0
    assert plain_fresh.mean < 0.95
    # confirmed on 10 more batches, it solves the 100 fresh worlds too
    assert confirmed.solved
    assert confirmed.failed_confirmations > 0
    assert confirmed.best_worlds == 110
    assert fresh.mean == 1.0
    assert confirmed.episodes == 10 * confirmed.evaluations <= 50_000


# ---------------------------------------------------------------------------- plots
def _cem_run(folder: Path, scores: list[float], per_iteration: int) -> Path:
    folder.mkdir(parents=True)
    lines = [
        json.dumps({"step": i + 1, "cem/best_score": s, "cem/episodes": (i + 1) * per_iteration})
        for i, s in enumerate(scores)
    ]
    lines.append(json.dumps({"step": len(scores), "eval/fresh": 0.5}))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_best_return_curve_of_cem_and_search_runs(tmp_path: Path) -> None:
    cem = _cem_run(tmp_path / "cem", [0.01, 0.35, 0.2, 0.6, 0.5], 170)
    episodes, best = best_return_curve(cem)
    assert episodes.tolist() == [170, 340, 510, 680, 850]
    assert best == pytest.approx([0.0, 0.25, 0.25, 0.5, 0.5])  # running max, bonus removed
    main_args = ["search", "--task", "harvester", "--episodes", "2000", "--neighbours", "20"]
    assert main([*main_args, "--runs-dir", str(tmp_path / "hc"), "--fresh-worlds", "10"]) == 0
    (run,) = (tmp_path / "hc" / "leaps-karel").iterdir()
    episodes, best = best_return_curve(run)
    assert episodes[-1] == 2000
    assert np.all(np.diff(episodes) >= 0)
    assert np.all(np.diff(best) >= 0)
    assert (
        best[-1]
        == json.loads((run / "results.json").read_text())["in_sample"]["return_without_bonus"]
    )


def test_plot_best_return_vs_episodes_writes_a_png(tmp_path: Path) -> None:
    from PIL import Image

    runs = {
        "CEM": [
            _cem_run(tmp_path / "c0", [0.1, 0.5, 1.1], 330),
            _cem_run(tmp_path / "c1", [0.3, 0.4], 330),
        ],
        "hill climbing": [_cem_run(tmp_path / "h0", [0.2, 0.9], 10)],
    }
    out = plot_best_return_vs_episodes(runs, tmp_path / "plots" / "maze.png", title="MAZE")
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size[0] > 300
    assert sorted(p.name for p in out.parent.iterdir()) == ["maze.png"]


def test_plot_best_return_panels_writes_one_png(tmp_path: Path) -> None:
    from PIL import Image

    panels = {
        task: {
            "hill climbing": [
                _cem_run(tmp_path / task / str(s), [0.1 * s, 0.6], 10) for s in (1, 2)
            ]
        }
        for task in ("MAZE", "TOPOFF", "HARVESTER", "CLEANHOUSE")
    }
    out = plot_best_return_panels(panels, tmp_path / "plots" / "curves.png", columns=3)
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size[0] > 2 * image.size[1]  # 3 columns, 2 rows
    assert sorted(p.name for p in out.parent.iterdir()) == ["curves.png"]
    with pytest.raises(UserError, match="no panels"):
        plot_best_return_panels({}, tmp_path / "x.png")
    with pytest.raises(UserError, match="no run directories"):
        plot_best_return_panels({"MAZE": {}}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no run directories"):
        plot_best_return_vs_episodes({}, tmp_path / "x.png")
    with pytest.raises(UserError, match=r"metrics\.jsonl: cannot read"):
        plot_best_return_vs_episodes({"CEM": [tmp_path / "missing"]}, tmp_path / "x.png")
    other = tmp_path / "other"
    other.mkdir()
    (other / "metrics.jsonl").write_text('{"step": 1, "train/loss": 0.5}\n')
    with pytest.raises(UserError, match="no best-return records"):
        plot_best_return_vs_episodes({"CEM": [other]}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
