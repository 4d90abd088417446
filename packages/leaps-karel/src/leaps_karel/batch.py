"""Batched execution: many programs × many worlds, optionally over worker processes.

Used by search (scoring a population of programs on a task) and by RL losses that need the
behaviour of many sampled programs. Each program is compiled once (`compile_program`) and run on
copies of every world; with ``workers > 1`` the programs are split across processes.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from leaps_karel.dsl import ParseError, Program, to_text
from leaps_karel.interpreter import DEFAULT_BUDGET, Mode, compile_program
from leaps_karel.world import World

if TYPE_CHECKING:
    from leaps_karel.tasks.base import Task


@dataclass
class BatchResult:
    """Outcome of `execute_batch` for P programs on N worlds.

    Attributes:
        num_actions: ``(P, N)`` int32 executed actions per run (-1 for an unparsable program).
        counter: ``(P, N)`` int32 final call counter.
        status: ``(P, N)`` int8: 0 finished, 1 budget stop / timeout, 2 crash, -1 parse error.
        actions: ``actions[p][n]`` action-id lists, when ``record=True``.
        worlds: ``worlds[p][n]`` final worlds, when ``keep_worlds=True``.
    """

    num_actions: np.ndarray
    counter: np.ndarray
    status: np.ndarray
    actions: list[list[list[int]]] | None = None
    worlds: list[list[World]] | None = None

    @property
    def finished(self) -> np.ndarray:
        """``(P, N)`` bool: the program ran to its end."""
        return self.status == 0


def _as_text(program: Program | str) -> str:
    return program if isinstance(program, str) else to_text(program)


def _run_chunk(
    programs: Sequence[str],
    worlds: Sequence[World],
    budget: int,
    mode: Mode,
    record: bool,
    keep_worlds: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Any] | None, list[Any] | None]:
    p, n = len(programs), len(worlds)
    num_actions = np.full((p, n), -1, dtype=np.int32)
    counter = np.zeros((p, n), dtype=np.int32)
    status = np.full((p, n), -1, dtype=np.int8)
    all_actions: list[Any] | None = [] if record else None
    all_worlds: list[Any] | None = [] if keep_worlds else None
    for i, text in enumerate(programs):
        row_actions: list[list[int]] = []
        row_worlds: list[World] = []
        try:
            fn = compile_program(text, mode=mode, budget=budget, record=record)
        except ParseError:
            if all_actions is not None:
                all_actions.append([[] for _ in worlds])
            if all_worlds is not None:
                all_worlds.append([w.copy() for w in worlds])
            continue
        for j, world in enumerate(worlds):
            w = world.copy()
            acts, cnt, st, _ = fn(w)
            if record:
                row_actions.append(acts)
                num_actions[i, j] = len(acts)
            else:
                num_actions[i, j] = acts
            counter[i, j] = cnt
            status[i, j] = st
            row_worlds.append(w)
        if all_actions is not None:
            all_actions.append(row_actions)
        if all_worlds is not None:
            all_worlds.append(row_worlds)
    return num_actions, counter, status, all_actions, all_worlds


def _chunks(n: int, parts: int) -> list[tuple[int, int]]:
    parts = max(1, min(parts, n))
    bounds = np.linspace(0, n, parts + 1).astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]


def _workers(workers: int | None) -> int:
    if workers is None or workers <= 0:
        return os.cpu_count() or 1
    return workers


def execute_batch(
    programs: Sequence[Program | str],
    worlds: Sequence[World],
    *,
    budget: int = DEFAULT_BUDGET,
    mode: Mode = "no_crash",
    record: bool = False,
    keep_worlds: bool = False,
    workers: int = 1,
) -> BatchResult:
    """Run every program on (a copy of) every world.

    Args:
        programs: P programs (text or `Program`); unparsable ones get status -1.
        worlds: N initial worlds (not modified).
        budget: call budget.
        mode: ``"no_crash"`` or ``"crash"``.
        record: also return the action lists.
        keep_worlds: also return the final worlds.
        workers: processes to use (1 = in this process; 0 = one per CPU).
    """
    texts = [_as_text(p) for p in programs]
    for w in worlds:
        w.tables  # noqa: B018 - build once before copying / pickling
    workers = _workers(workers)
    if workers == 1 or len(texts) < 2 * workers:
        na, cnt, st, acts, ws = _run_chunk(texts, worlds, budget, mode, record, keep_worlds)
        return BatchResult(na, cnt, st, acts, ws)
    parts = _chunks(len(texts), workers)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(_run_chunk, texts[a:b], list(worlds), budget, mode, record, keep_worlds)
            for a, b in parts
        ]
        outs = [f.result() for f in futures]
    acts_all: list[Any] | None = [] if record else None
    worlds_all: list[Any] | None = [] if keep_worlds else None
    for o in outs:
        if acts_all is not None and o[3] is not None:
            acts_all.extend(o[3])
        if worlds_all is not None and o[4] is not None:
            worlds_all.extend(o[4])
    return BatchResult(
        np.concatenate([o[0] for o in outs]),
        np.concatenate([o[1] for o in outs]),
        np.concatenate([o[2] for o in outs]),
        acts_all,
        worlds_all,
    )


def _evaluate_chunk(task: Task, programs: Sequence[Any], num_worlds: int) -> list[float]:
    return [task.evaluate(p, num_worlds) for p in programs]


def evaluate_batch(
    task: Task,
    programs: Sequence[Program | str | Sequence[int]],
    *,
    num_worlds: int = 10,
    workers: int = 1,
    progress: bool = False,
) -> np.ndarray:
    """Task returns (§10.1, syntax bonus included) of many programs: ``(P,)`` float64.

    Args:
        task: a `leaps_karel.tasks.Task`.
        programs: programs as text, `Program` or token ids (invalid ones return 0.01).
        num_worlds: rollouts per program.
        workers: processes to use (1 = in this process; 0 = one per CPU).
        progress: show a progress bar over the programs (tqdm; hidden when stderr is not a
            terminal).
    """
    from tqdm import tqdm

    task._ensure(num_worlds)
    progs = [p if isinstance(p, str | Program) else [int(t) for t in p] for p in programs]
    workers = _workers(workers)
    bar = tqdm(total=len(progs), unit="prog", desc="evaluate", disable=None if progress else True)
    with bar:
        if workers == 1 or len(progs) < 2 * workers:
            returns = []
            for program in progs:
                returns.append(task.evaluate(program, num_worlds))
                bar.update()
            return np.asarray(returns, dtype=np.float64)
        # Small chunks keep the bar moving; results are put back in program order.
        parts = _chunks(len(progs), max(workers, min(len(progs), 8 * workers)))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_evaluate_chunk, task, progs[a:b], num_worlds) for a, b in parts]
            for future in as_completed(futures):
                bar.update(len(future.result()))
            return np.asarray([x for f in futures for x in f.result()], dtype=np.float64)
