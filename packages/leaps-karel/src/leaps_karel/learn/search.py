"""``leaps-karel search``: hill climbing in program space (Carvalho, Tjhia & Lelis, ICLR 2024).

From a random program the search draws up to k neighbours (`leaps_karel.learn.neighbours`)
and moves to the first one whose return is higher than the current program's; when none of
the k is, it restarts from a fresh random program. Returns and episodes are those of
``leaps-karel cem`` (`leaps_karel.learn.cem_scoring.TaskScorer`): a program evaluation runs the
program on the shared initial states (10 episodes) and scores it with the task return of env
spec §10.1 (+0.1 syntax bonus); every evaluation counts, as CEM counts its whole population,
though a program already scored on the same initial states is not executed again; the shared
states are regenerated periodically. The search needs neither torch nor
stage-1 weights. Deterministic given the seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from leaps_karel.dsl import to_text
from leaps_karel.learn.cem_scoring import Score, TaskScorer
from leaps_karel.learn.neighbours import Limits, Neighbourhood
from leaps_karel.learn.search_config import SearchConfig
from leaps_karel.tasks.base import Options

_EPS = 1e-9


@dataclass
class SearchResult:
    """The outcome of one hill-climbing search.

    Attributes:
        best_program: the best program found (text).
        best: its score on the initial states it was found on (in-sample).
        best_batch: index of those initial states.
        evaluations: program evaluations (each = ``worlds_per_eval`` episodes), counted as
            CEM counts its population: every evaluation, also of a program scored before.
        episodes: ``evaluations × worlds_per_eval``.
        distinct: programs actually executed (the scorer's cache misses).
        restarts: restarts from a random program (after k non-improving neighbours).
        moves: improving moves taken.
        solved: whether the best reached the solved score.
        curve: ``(episodes, best return without the bonus)`` at every new best.
    """

    best_program: str
    best: Score
    best_batch: int
    evaluations: int
    episodes: int
    distinct: int
    restarts: int
    moves: int
    solved: bool
    curve: list[tuple[int, float]] = field(default_factory=list)


def hill_climb(
    scorer: TaskScorer,
    hood: Neighbourhood,
    *,
    max_evaluations: int,
    neighbours: int = 250,
    regenerate_every: int = 0,
    first_batch: int = 1,
    solved_score: float = 1.1,
    log_every: int = 1000,
    record: Callable[[dict[str, Any]], None] | None = None,
    on_best: Callable[[int, Score, str], None] | None = None,
) -> SearchResult:
    """Hill climbing with restarts until the evaluation budget is spent or the task is solved.

    Args:
        scorer: the task return on shared initial states (batches of initial states).
        hood: draws random programs and neighbours.
        max_evaluations: program evaluations allowed (episodes / worlds per evaluation).
        neighbours: k, neighbours tried before a restart.
        regenerate_every: new initial states after this many evaluations (0 = never); the
            current program is then re-scored (one evaluation).
        first_batch: the initial-state batch the search starts on.
        solved_score: stop once a program scores at least this (bonus included).
        log_every: ``record`` is called at least every this many evaluations.
        record: receives metric dictionaries (keys ``search/episodes``,
            ``search/best_return``, …) with ``step`` = episodes.
        on_best: called with ``(episodes, score, program)`` at every new best.

    Returns:
        The `SearchResult`.
    """
    w = scorer.worlds_per_eval
    batch = first_batch
    scorer.set_batch(batch)
    evaluations = batch_start = restarts = moves = 0
    best_text, best, best_batch = "", Score(-math.inf, -math.inf, False), batch
    curve: list[tuple[int, float]] = []
    last_logged = -log_every

    def emit(**extra: float) -> None:
        nonlocal last_logged
        last_logged = evaluations
        if record is not None:
            record(
                {
                    "search/episodes": evaluations * w,
                    "search/evaluations": evaluations,
                    "search/best_return": best.mean,
                    "search/best_score": best.value,
                    "search/restarts": restarts,
                    "search/moves": moves,
                    "search/batch": batch,
                    **extra,
                }
            )

    def evaluate(text: str) -> Score | None:
        """Score on the current initial states; None once the budget is spent."""
        nonlocal best_text, best, best_batch, evaluations
        if evaluations >= max_evaluations:
            return None
        evaluations += 1
        score = scorer.detail(text)
        if score.value > best.value + _EPS:
            best_text, best, best_batch = text, score, batch
            curve.append((evaluations * w, score.mean))
            if on_best is not None:
                on_best(evaluations * w, score, text)
            emit(**{"search/current_score": score.value})
        elif evaluations - last_logged >= log_every:
            emit(**{"search/current_score": score.value})
        return score

    program = hood.random_program()
    current = evaluate(to_text(program))
    tried = 0  # neighbours of the current program drawn so far
    while current is not None and best.value < solved_score - _EPS:
        if regenerate_every and evaluations - batch_start >= regenerate_every:
            batch, batch_start, tried = batch + 1, evaluations, 0
            scorer.set_batch(batch)
            current = evaluate(to_text(program))  # its return on the new initial states
        elif tried == neighbours:  # a local maximum: restart
            restarts, tried = restarts + 1, 0
            program = hood.random_program()
            current = evaluate(to_text(program))
        else:
            candidate = hood.neighbour(program)
            tried += 1
            score = evaluate(to_text(candidate))
            if score is None:
                break
            if score.value > current.value + _EPS:  # first improvement
                program, current, tried = candidate, score, 0
                moves += 1
    emit()
    return SearchResult(
        best_program=best_text,
        best=best,
        best_batch=best_batch,
        evaluations=evaluations,
        episodes=evaluations * w,
        distinct=scorer.evaluations,
        restarts=restarts,
        moves=moves,
        solved=best.value >= solved_score - _EPS,
        curve=curve,
    )


def _options(cfg: SearchConfig) -> Options:
    o = cfg.options
    return Options(
        short_rollouts_score_zero=o.short_rollouts_score_zero,
        marker_total_lag=o.marker_total_lag,
        topoff_last_cell_marker=o.topoff_last_cell_marker,
        stairclimber_off_stairs_penalty=o.stairclimber_off_stairs_penalty,
        budget=o.budget,
    )


def _results(
    cfg: SearchConfig, result: SearchResult, scorer: TaskScorer, seconds: float
) -> dict[str, Any]:
    """``results.json``: the keys of ``leaps-karel cem``'s results plus the search's counts."""
    fresh = scorer.fresh(result.best_program, cfg.fresh_worlds)
    return {
        "task": scorer.spec.name,
        "method": "hill_climbing",
        "seed": cfg.seed,
        "program": result.best_program,
        "episodes": result.episodes,
        "evaluations": result.evaluations,
        "solved_early": result.solved,
        "restarts": result.restarts,
        "moves": result.moves,
        "in_sample": {
            "what": f"best program on the {cfg.worlds_per_eval} shared initial states it was "
            "found on",
            "return_with_bonus": result.best.value,
            "return_without_bonus": result.best.mean,
            "worlds": cfg.worlds_per_eval,
            "batch": result.best_batch,
        },
        "fresh": {
            "what": f"best program re-evaluated on {cfg.fresh_worlds} fresh initial states "
            "never used by the search",
            "return_with_bonus": fresh.value,
            "return_without_bonus": fresh.mean,
            "worlds": cfg.fresh_worlds,
        },
        "valid": fresh.valid,
        "distinct_programs_executed_this_process": result.distinct,
        "seconds_this_process": seconds,
    }


def make_scorer(cfg: SearchConfig) -> tuple[TaskScorer, int]:
    """The scorer of a search and its first batch (fresh worlds after every usable batch)."""
    first = 1 if cfg.skip_first_batch else 0
    every = cfg.regeneration_interval()
    last = first + (cfg.max_evaluations() // every + 1 if every else 0)
    scorer = TaskScorer(
        cfg.task,
        cfg.seed,
        _options(cfg),
        worlds_per_eval=cfg.worlds_per_eval,
        fresh_start=(last + 1) * cfg.worlds_per_eval,
    )
    return scorer, first


def main(cfg: SearchConfig) -> int:
    """Run ``leaps-karel search``; writes ``results.json`` and ``metrics.jsonl``."""
    from compkit_utils.io import atomic_write_json, atomic_write_text
    from compkit_utils.logging import RunLogger
    from compkit_utils.runs import open_run, write_config
    from leaps_karel.tasks.registry import get_spec

    task = get_spec(cfg.task).name
    scorer, first = make_scorer(cfg)
    hood = Neighbourhood(
        seed=cfg.seed,
        limits=Limits(cfg.max_depth, cfg.max_sequence, cfg.max_tokens),
    )
    print(
        f"search {task} seed {cfg.seed}: hill climbing, k = {cfg.neighbours}, budget "
        f"{cfg.episodes} episodes ({cfg.max_evaluations()} evaluations × {cfg.worlds_per_eval} "
        f"worlds), new initial states every {cfg.regeneration_interval() or 'never'} evaluations",
        flush=True,
    )

    def on_best(episodes: int, score: Score, text: str) -> None:
        if not cfg.quiet:
            print(f"episodes {episodes:>9}  return {score.mean:.4f}  {text}", flush=True)

    with open_run(
        "leaps-karel", "search", seed=cfg.seed, runs_dir=cfg.runs_dir, run_name=cfg.run_name
    ) as run:
        write_config(run.path, cfg, "leaps-karel")
        started = time.perf_counter()
        with RunLogger(run.path, console_every=0, package="leaps-karel") as logger:
            result = hill_climb(
                scorer,
                hood,
                max_evaluations=cfg.max_evaluations(),
                neighbours=cfg.neighbours,
                regenerate_every=cfg.regeneration_interval(),
                first_batch=first,
                solved_score=cfg.solved_score,
                log_every=cfg.log_every,
                record=lambda m: logger.log(int(m["search/episodes"]), m),
                on_best=on_best,
            )
            wall = time.perf_counter() - started
            results = _results(cfg, result, scorer, wall)
            logger.log(
                result.episodes,
                {
                    "search/episodes": result.episodes,
                    "eval/in_sample": results["in_sample"]["return_without_bonus"],
                    "eval/in_sample_with_bonus": results["in_sample"]["return_with_bonus"],
                    "eval/fresh": results["fresh"]["return_without_bonus"],
                    "eval/fresh_with_bonus": results["fresh"]["return_with_bonus"],
                },
            )
        atomic_write_text(run.path / "program.txt", result.best_program + "\n")
        atomic_write_json(run.path / "results.json", results)
    r_in, r_fresh = results["in_sample"], results["fresh"]
    print(
        f"best program: {result.best_program}\n"
        f"return without the +0.1 bonus: in-sample {r_in['return_without_bonus']:.4f} on "
        f"{r_in['worlds']} worlds, fresh {r_fresh['return_without_bonus']:.4f} on "
        f"{r_fresh['worlds']} worlds (with the bonus: {r_in['return_with_bonus']:.4f} / "
        f"{r_fresh['return_with_bonus']:.4f})\n"
        f"{result.episodes} episodes, {result.restarts} restarts, {wall:.1f} s; {run.path}"
    )
    return 0
