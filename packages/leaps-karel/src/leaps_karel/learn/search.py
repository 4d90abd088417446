"""``leaps-karel search``: hill climbing in program space (Carvalho, Tjhia & Lelis, ICLR 2024).

From a random program the search draws up to k neighbours (`leaps_karel.learn.neighbours`)
and moves to the first one whose return is higher than the current program's; when none of
the k is, it restarts from a fresh random program. Returns and episodes are those of
``leaps-karel cem`` (`leaps_karel.learn.cem_scoring.TaskScorer`): a program evaluation runs the
program on the shared initial states (10 episodes) and scores it with the task return of env
spec §10.1 (+0.1 syntax bonus); every evaluation counts, as CEM counts its whole population,
though a program already scored on the same initial states is not executed again; the shared
states are regenerated periodically. By default (``--confirm-solved``) a program that solves
its initial states must also solve the next ``--confirm-batches`` batches before the search
stops; otherwise the search goes on from it on the batch where it fell short. The search needs
neither torch nor stage-1 weights. Deterministic given the seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from leaps_karel.dsl import to_text
from leaps_karel.learn.cem_scoring import Score, TaskScorer
from leaps_karel.learn.neighbours import Limits, Neighbourhood
from leaps_karel.learn.search_config import SearchConfig
from leaps_karel.tasks.base import Options
from leaps_karel.world import World

_EPS = 1e-9


@dataclass
class SearchResult:
    """The outcome of one hill-climbing search.

    Attributes:
        best_program: the best program found (text).
        best: its score on the initial states it was found on (in-sample): one batch, or
            its mean over the batches it was confirmed on.
        best_batch: index of the first of those batches.
        best_worlds: how many initial states ``best`` is a mean over.
        evaluations: program evaluations (each = ``worlds_per_eval`` episodes), counted as
            CEM counts its population: every evaluation, also of a program scored before.
        episodes: ``evaluations × worlds_per_eval``.
        distinct: programs actually executed (the scorer's cache misses).
        restarts: restarts from a random program (after k non-improving neighbours).
        moves: improving moves taken.
        solved: whether the best reached the solved score (and, with confirmation, kept it
            on every confirmation batch).
        confirmations: evaluations spent confirming solving programs on fresh batches.
        failed_confirmations: solving programs that fell short on a confirmation batch.
        last_batch: the last batch of initial states used.
        curve: ``(episodes, best return without the bonus)`` at every new best.
    """

    best_program: str
    best: Score
    best_batch: int
    best_worlds: int
    evaluations: int
    episodes: int
    distinct: int
    restarts: int
    moves: int
    solved: bool
    confirmations: int = 0
    failed_confirmations: int = 0
    last_batch: int = 0
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
    confirm_batches: int = 0,
    log_every: int = 1000,
    record: Callable[[dict[str, Any]], None] | None = None,
    on_best: Callable[[int, Score, str], None] | None = None,
) -> SearchResult:
    """Hill climbing with restarts until the evaluation budget is spent or the task is solved.

    With ``confirm_batches`` = C > 0, a program that reaches ``solved_score`` on the current
    initial states is not accepted at once: it is scored on the next C batches of initial
    states (one evaluation each, counted in the budget). Only if it reaches ``solved_score`` on
    every one of them is the task solved (its best score is then its mean over the 1 + C
    batches). At the first batch where it falls short, the search moves to that program and
    goes on with that batch as its shared initial states, so it cannot overfit one batch; the
    program counts as a best with its mean over the batches it was scored on.

    Args:
        scorer: the task return on shared initial states (batches of initial states).
        hood: draws random programs and neighbours.
        max_evaluations: program evaluations allowed (episodes / worlds per evaluation).
        neighbours: k, neighbours tried before a restart.
        regenerate_every: new initial states after this many evaluations (0 = never); the
            current program is then re-scored (one evaluation).
        first_batch: the initial-state batch the search starts on.
        solved_score: stop once a program scores at least this (bonus included).
        confirm_batches: C, fresh batches a solving program must also solve (0 = accept a
            program as soon as it solves the current batch, the original's rule).
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
    evaluations = batch_start = restarts = moves = confirmations = failed = 0
    best_text, best, best_batch = "", Score(-math.inf, -math.inf, False), batch
    best_worlds, solved = w, False
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
                    "search/failed_confirmations": failed,
                    **extra,
                }
            )

    def offer(text: str, score: Score, batches: int, first: int) -> None:
        """``score`` (a mean over ``batches`` batches from ``first``) as a candidate best."""
        nonlocal best_text, best, best_batch, best_worlds
        if score.value > best.value + _EPS:
            best_text, best, best_batch, best_worlds = text, score, first, batches * w
            curve.append((evaluations * w, score.mean))
            if on_best is not None:
                on_best(evaluations * w, score, text)
            emit(**{"search/current_score": score.value})

    def confirm(text: str, score: Score) -> tuple[Score, bool]:
        """Score a solving program on the next batches; its score on the last one used."""
        nonlocal batch, batch_start, evaluations, solved, confirmations, failed
        first, scores = batch, [score]
        passed = True
        for _ in range(confirm_batches):
            if evaluations >= max_evaluations:
                passed = False  # budget spent before the program was confirmed
                break
            batch += 1
            scorer.set_batch(batch)
            evaluations += 1
            confirmations += 1
            scores.append(scorer.detail(text))
            if scores[-1].value < solved_score - _EPS:
                passed = False
                failed += 1
                break
        n = len(scores)
        pooled = Score(
            sum(s.value for s in scores) / n, sum(s.mean for s in scores) / n, score.valid
        )
        solved = passed
        offer(text, pooled, n, first)
        moved = batch != first
        if moved:
            batch_start = evaluations
        return scores[-1], moved

    def evaluate(text: str) -> tuple[Score | None, bool]:
        """Score on the current initial states (None once the budget is spent).

        Also returns whether a failed confirmation moved the search to new initial states.
        """
        nonlocal evaluations, solved
        if evaluations >= max_evaluations:
            return None, False
        evaluations += 1
        score = scorer.detail(text)
        if score.value >= solved_score - _EPS:
            if confirm_batches:
                return confirm(text, score)
            solved = True
        if score.value > best.value + _EPS:
            offer(text, score, 1, batch)
        elif evaluations - last_logged >= log_every:
            emit(**{"search/current_score": score.value})
        return score, False

    program = hood.random_program()
    current, _ = evaluate(to_text(program))
    tried = 0  # neighbours of the current program drawn so far
    while current is not None and not solved:
        if regenerate_every and evaluations - batch_start >= regenerate_every:
            batch, batch_start, tried = batch + 1, evaluations, 0
            scorer.set_batch(batch)
            current, _ = evaluate(to_text(program))  # its return on the new initial states
        elif tried == neighbours:  # a local maximum: restart
            restarts, tried = restarts + 1, 0
            program = hood.random_program()
            current, _ = evaluate(to_text(program))
        else:
            candidate = hood.neighbour(program)
            tried += 1
            score, moved = evaluate(to_text(candidate))
            if score is None:
                break
            if moved or score.value > current.value + _EPS:  # first improvement
                program, current, tried = candidate, score, 0
                moves += 1
    emit()
    return SearchResult(
        best_program=best_text,
        best=best,
        best_batch=best_batch,
        best_worlds=best_worlds,
        evaluations=evaluations,
        episodes=evaluations * w,
        distinct=scorer.evaluations,
        restarts=restarts,
        moves=moves,
        solved=solved,
        confirmations=confirmations,
        failed_confirmations=failed,
        last_batch=batch,
        curve=curve,
    )


class StreamScorer(TaskScorer):
    """`TaskScorer` whose worlds come from one generator kept across batches.

    The worlds are the same as `TaskScorer`'s (world ``i`` of the task's seeded stream), but
    moving to a later batch draws only the worlds in between instead of the whole stream
    again, so a search may use many batches (confirmations) cheaply. Only worlds at or after
    the last requested start are kept.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rng = np.random.default_rng(self.seed)
        self._drawn = 0  # worlds drawn from the stream so far
        self._kept: list[World] = []  # worlds _drawn - len(_kept) … _drawn - 1

    def worlds(self, start: int, count: int) -> list[World]:
        """Worlds ``start … start + count − 1`` of the seeded stream."""
        low = self._drawn - len(self._kept)  # index of the first kept world
        if start < low:
            return super().worlds(start, count)
        del self._kept[: start - low]  # the kept worlds now start at `start` (or are none)
        while self._drawn < start + count:
            world = self.spec.generate(self._rng, self.options)
            if self._drawn >= start:
                self._kept.append(world)
            self._drawn += 1
        return [w.copy() for w in self._kept[:count]]


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
    """``results.json``: the keys of ``leaps-karel cem``'s results plus the search's counts.

    The fresh worlds follow every world the search could use without confirmations (the
    same worlds for every run of a seed and budget) or, if confirmations went further, the
    last batch it used.
    """
    w = cfg.worlds_per_eval
    scorer.fresh_start = max(scorer.fresh_start, (result.last_batch + 1) * w)
    fresh = scorer.fresh(result.best_program, cfg.fresh_worlds)
    return {
        "task": scorer.spec.name,
        "method": "hill_climbing",
        "seed": cfg.seed,
        "program": result.best_program,
        "episodes": result.episodes,
        "evaluations": result.evaluations,
        "solved_early": result.solved,
        "confirm_solved": cfg.confirm_solved,
        "confirm_batches": cfg.confirm_batches if cfg.confirm_solved else 0,
        "confirmation_evaluations": result.confirmations,
        "failed_confirmations": result.failed_confirmations,
        "restarts": result.restarts,
        "moves": result.moves,
        "in_sample": {
            "what": f"best program on the {result.best_worlds} shared initial states it was "
            "found (and confirmed) on",
            "return_with_bonus": result.best.value,
            "return_without_bonus": result.best.mean,
            "worlds": result.best_worlds,
            "batch": result.best_batch,
        },
        "fresh": {
            "what": f"best program re-evaluated on {cfg.fresh_worlds} fresh initial states "
            "never used by the search",
            "return_with_bonus": fresh.value,
            "return_without_bonus": fresh.mean,
            "worlds": cfg.fresh_worlds,
            "first_world": scorer.fresh_start,
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
    scorer = StreamScorer(
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
        f"worlds), new initial states every {cfg.regeneration_interval() or 'never'} evaluations"
        + (
            f", a solving program confirmed on {cfg.confirm_batches} fresh batches"
            if cfg.confirm_solved
            else ", a solving program accepted at once"
        ),
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
                confirm_batches=cfg.confirm_batches if cfg.confirm_solved else 0,
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
