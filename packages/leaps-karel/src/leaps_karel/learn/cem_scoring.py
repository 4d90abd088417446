"""Scoring for the stage-2 search: shared initial states, the program cache, fresh worlds.

Two scorers with one interface (`Scorer`): `TaskScorer` computes the task return of env spec
§10.1 (mean last-step reward over the shared initial states + 0.1, 0.01 if invalid);
`TargetScorer` computes the program-behaviour reward of spec §3.5 (prefix match of the
execution with a target program's demonstrations + 0.1). Both hold *batches* of initial states:
batch ``b`` is a pure function of the seed and ``b``, so a resumed run sees the same worlds.
Within a batch every distinct program text is executed once (the cache).
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from leaps_karel.tasks.base import INVALID_RETURN, SYNTAX_BONUS, Options, Task, compile_valid
from leaps_karel.tasks.registry import get_spec
from leaps_karel.world import World

#: Batch index of the fresh demonstrations of `TargetScorer.fresh` (never used by a search).
FRESH_BATCH = 1_000_000


@dataclass(frozen=True)
class Score:
    """A program's return with and without the syntax bonus.

    Attributes:
        value: the return (+0.1 for a valid program, 0.01 if invalid).
        mean: mean per-rollout score without the bonus (0 for an invalid program).
        valid: whether the program passed the validity test.
    """

    value: float
    mean: float
    valid: bool


class Scorer(Protocol):
    """What the search needs from a reward."""

    evaluations: int
    """Distinct programs executed so far (cache misses)."""

    def set_batch(self, batch: int) -> None:
        """Switch to initial-state batch ``batch`` (clears the cache when it changes)."""
        ...

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """``(P,)`` float64 returns (bonus included) of ``texts`` on the current batch."""
        ...

    def fresh(self, text: str, count: int) -> Score:
        """Score ``text`` on ``count`` fresh initial states never used by the search."""
        ...

    def detail(self, text: str) -> Score:
        """Score of ``text`` on the current batch, with and without the bonus."""
        ...


class _Cached(abc.ABC):
    """Cache and batch bookkeeping shared by the scorers."""

    def __init__(self, worlds_per_eval: int, workers: int = 1) -> None:
        self.worlds_per_eval = worlds_per_eval
        self.workers = workers
        self.batch = -1
        self.evaluations = 0
        self._cache: dict[str, Score] = {}

    def set_batch(self, batch: int) -> None:
        if batch != self.batch:
            self.batch = batch
            self._cache.clear()
            self._load(batch)

    def clear_cache(self) -> None:
        """Forget every score (the next `score` executes every program again)."""
        self._cache.clear()

    @abc.abstractmethod
    def _load(self, batch: int) -> None:
        """Draw the initial states of ``batch``."""

    @abc.abstractmethod
    def _score_one(self, text: str) -> Score:
        """Score one program on the current batch."""

    def _score_many(self, texts: list[str]) -> list[Score]:
        return [self._score_one(t) for t in texts]

    def detail(self, text: str) -> Score:
        self.score([text])
        return self._cache[text]

    def score(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            for text, s in zip(missing, self._score_many(missing), strict=True):
                self._cache[text] = s
            self.evaluations += len(missing)
        return np.array([self._cache[t].value for t in texts], dtype=np.float64)


def _summary(scores: list[float] | None, options: Options) -> Score:
    if scores is None:
        return Score(options.invalid_return, 0.0, False)
    mean = sum(scores) / len(scores) if scores else 0.0
    return Score(mean + options.syntax_bonus, mean, True)


def _score_chunk(task: Task, texts: list[str], count: int) -> list[Score]:
    return [_summary(task.scores(t, count), task.options) for t in texts]


class TaskScorer(_Cached):
    """The task return of env spec §10.1 on shared, seeded initial states.

    Batch ``b`` holds worlds ``b·W … b·W + W − 1`` of the task's seeded generator
    (``W = worlds_per_eval``): the original draws a new set of W initial states from one seeded
    stream at every environment reset.

    Args:
        task: task name.
        seed: seeds the initial-state stream.
        options: task options (defaults = the original).
        worlds_per_eval: W.
        workers: processes for the programs of one call that are not cached (1 = here).
        fresh_start: index of the first fresh world (after every world the search can use).
    """

    def __init__(
        self,
        task: str,
        seed: int,
        options: Options | None = None,
        worlds_per_eval: int = 10,
        workers: int = 1,
        fresh_start: int = 0,
    ) -> None:
        super().__init__(worlds_per_eval, workers)
        self.spec = get_spec(task)
        self.seed = seed
        self.fresh_start = fresh_start
        self.options = options or Options()
        self.task: Task | None = None
        self._pool: object | None = None

    def worlds(self, start: int, count: int) -> list[World]:
        """Worlds ``start … start + count − 1`` of the seeded stream."""
        full = Task(self.spec, seed=self.seed, num_worlds=start + count, options=self.options)
        return full.initial_worlds[start:]

    def _load(self, batch: int) -> None:
        w = self.worlds_per_eval
        self.task = Task.from_worlds(self.spec, self.worlds(batch * w, w), self.options)

    def _score_one(self, text: str) -> Score:
        assert self.task is not None
        return _summary(self.task.scores(text, self.worlds_per_eval), self.options)

    def _score_many(self, texts: list[str]) -> list[Score]:
        if self.workers <= 1 or len(texts) < 2 * self.workers:
            return [self._score_one(t) for t in texts]
        from concurrent.futures import ProcessPoolExecutor

        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers)
        pool: ProcessPoolExecutor = self._pool  # type: ignore[assignment]
        assert self.task is not None
        bounds = np.linspace(0, len(texts), self.workers + 1).astype(int)
        futures = [
            pool.submit(_score_chunk, self.task, texts[a:b], self.worlds_per_eval)
            for a, b in itertools.pairwise(bounds)
            if b > a
        ]
        return [s for f in futures for s in f.result()]

    def close(self) -> None:
        """Stop the worker processes, if any."""
        if self._pool is not None:
            self._pool.shutdown()  # type: ignore[attr-defined]
            self._pool = None

    def fresh(self, text: str, count: int) -> Score:
        """Score on ``count`` worlds of the stream after every world the search can use."""
        task = Task.from_worlds(self.spec, self.worlds(self.fresh_start, count), self.options)
        return _summary(task.scores(text, count), self.options)


# ---------------------------------------------------------------------------- reconstruction
def _random_world(rng: np.random.Generator, wall_prob: float, marker_prob: float) -> World:
    from leaps_karel.demos import sample_worlds

    walls, markers, agents = sample_worlds(rng, 1, 8, 8, wall_prob, marker_prob)
    r, c, d = (int(x) for x in agents[0])
    return World(8, 8, walls[0].ravel().tolist(), markers[0].ravel().tolist(), (r, c, d))


def _trace(world: World, actions: Sequence[int]) -> list[tuple[int, int, tuple[int, ...]]]:
    w = world.copy()
    out = [(w.pos, w.dir, tuple(w.markers))]
    for a in actions:
        w.step(a)
        out.append((w.pos, w.dir, tuple(w.markers)))
    return out


def prefix_match(gt: Sequence[object], pred: Sequence[object]) -> float:
    """The §3.5 score of one demonstration: leading identical states, normalised.

    ``(m − 1) / (max(ℓ_g, ℓ_p) − 1)`` with ``m`` the number of leading identical states and
    ``ℓ`` the lengths in states; 0 when ``pred`` is empty, 1 when both have one state.
    """
    lg, lp = len(gt), len(pred)
    if lp == 0:
        return 0.0
    if lg == lp == 1:
        return 1.0
    m = 0
    for a, b in zip(gt, pred, strict=False):
        if a != b:
            break
        m += 1
    return (m - 1) / (max(lg, lp) - 1)


class TargetScorer(_Cached):
    """The program-behaviour reward of spec §3.5 against a fixed target program.

    Each batch draws fresh random 8×8 worlds (wall probability 0.25, marker probability 0.1)
    and keeps the first ``worlds_per_eval`` on which the target finishes within the budget in
    at most 99 actions (up to 1000 trials). The original's "cover all branches" selection of
    demonstration worlds is not reproduced.

    Args:
        target: the target program text.
        seed: seeds the demonstration worlds (batch ``b`` uses ``default_rng([seed, b])``).
        worlds_per_eval: demonstrations per evaluation.
        budget: the interpreter's call budget.
    """

    def __init__(
        self, target: str, seed: int, worlds_per_eval: int = 10, budget: int = 220
    ) -> None:
        super().__init__(worlds_per_eval)
        self.target = " ".join(target.split())
        self.seed = seed
        self.budget = budget
        self.options = Options(budget=budget)
        self.demos: list[tuple[World, list[tuple[int, int, tuple[int, ...]]]]] = []

    def _demos(self, batch: int, count: int) -> list[tuple[World, list]]:
        from compkit_utils.errors import UserError
        from leaps_karel.interpreter import compile_program

        run = compile_program(self.target, budget=self.budget)
        rng = np.random.default_rng([self.seed, batch])
        demos = []
        for _ in range(max(1000, 100 * count)):
            world = _random_world(rng, 0.25, 0.1)
            actions, _, status, _ = run(world.copy())
            if status == 0 and len(actions) < 100:
                demos.append((world, _trace(world, actions)))
                if len(demos) == count:
                    return demos
        raise UserError(
            f"--target-program: the target finished on only {len(demos)} of "
            f"{max(1000, 100 * count)} random worlds; pass a program that terminates"
        )

    def _load(self, batch: int) -> None:
        self.demos = self._demos(batch, self.worlds_per_eval)

    def _match(self, text: str, demos: list[tuple[World, list]]) -> Score:
        from leaps_karel.interpreter import compile_program

        if compile_valid(text, self.budget) is None:
            return Score(INVALID_RETURN, 0.0, False)
        run = compile_program(text, budget=self.budget)
        scores = []
        for world, gt in demos:
            actions = run(world.copy())[0]
            scores.append(prefix_match(gt, _trace(world, actions)))
        mean = sum(scores) / len(scores)
        return Score(mean + SYNTAX_BONUS, mean, True)

    def _score_one(self, text: str) -> Score:
        return self._match(text, self.demos)

    def fresh(self, text: str, count: int) -> Score:
        """Score on ``count`` demonstrations of a batch no search uses."""
        return self._match(text, self._demos(FRESH_BATCH, count))

    def close(self) -> None:
        """Nothing to release."""
