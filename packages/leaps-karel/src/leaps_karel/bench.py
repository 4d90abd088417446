"""``leaps-karel bench``: our engine beside a reference implemented the way the original is.

The reference (`TensorKarel` + `run_reference`) is a straightforward tree-walking interpreter
over the program AST that keeps the ``(H, W, 16)`` NumPy state tensor, locates the agent and
marker counts from it, records the state history after every action and computes the task
reward on the tensor after every action — the structure of the original LEAPS code. Both sides
run the same programs on the same worlds in the same process, one core.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from leaps_karel.dsl import (
    Program,
    is_valid,
    parse,
)
from leaps_karel.interpreter import (
    DEFAULT_BUDGET,
    _compile_text,
    compile_program,
    walk_no_crash,
)
from leaps_karel.tasks.base import Task, program_text
from leaps_karel.tasks.registry import TASKS, get_spec
from leaps_karel.world import DELTAS, World

#: Programs used by the benchmark: the spec's first sampler draws, budget test vectors, the six
#: reference solutions and sampler-style programs (fixed, so figures are comparable).
BENCH_PROGRAMS: tuple[str, ...] = (
    (
        "DEF run m( turnLeft move turnLeft move WHILE c( frontIsClear c) w( REPEAT R=16 r( "
        "move r) w) m)"
    ),
    "DEF run m( turnLeft turnLeft WHILE c( frontIsClear c) w( pickMarker w) turnLeft m)",
    "DEF run m( putMarker WHILE c( frontIsClear c) w( turnLeft w) move move pickMarker m)",
    "DEF run m( move move turnRight move putMarker m)",
    "DEF run m( IF c( frontIsClear c) i( move i) turnLeft move m)",
    "DEF run m( REPEAT R=5 r( move turnRight r) pickMarker m)",
    "DEF run m( IFELSE c( markersPresent c) i( pickMarker i) ELSE e( move e) move m)",
    "DEF run m( WHILE c( not c( frontIsClear c) c) w( turnLeft w) move move m)",
    (
        "DEF run m( WHILE c( frontIsClear c) w( move w) turnRight WHILE c( frontIsClear c) w( "
        "move putMarker w) m)"
    ),
    (
        "DEF run m( WHILE c( frontIsClear c) w( IF c( markersPresent c) i( pickMarker i) "
        "turnLeft w) m)"
    ),
    "DEF run m( REPEAT R=19 r( REPEAT R=19 r( turnLeft r) r) m)",
    "DEF run m( WHILE c( noMarkersPresent c) w( turnLeft move turnRight move w) m)",
    (
        "DEF run m( WHILE c( noMarkersPresent c) w( WHILE c( frontIsClear c) w( move w) IF c( "
        "noMarkersPresent c) i( putMarker turnLeft move i) w) m)"
    ),
    "DEF run m( WHILE c( frontIsClear c) w( IF c( markersPresent c) i( putMarker i) move w) m)",
    (
        "DEF run m( WHILE c( noMarkersPresent c) w( IFELSE c( rightIsClear c) i( turnRight i) "
        "ELSE e( WHILE c( not c( frontIsClear c) c) w( turnLeft w) e) move w) m)"
    ),
    (
        "DEF run m( WHILE c( markersPresent c) w( WHILE c( markersPresent c) w( pickMarker "
        "move w) turnRight move turnLeft WHILE c( markersPresent c) w( pickMarker move w) "
        "turnLeft move turnRight w) m)"
    ),
    (
        "DEF run m( WHILE c( noMarkersPresent c) w( IF c( leftIsClear c) i( turnLeft i) move "
        "IF c( markersPresent c) i( pickMarker i) w) m)"
    ),
    "DEF run m( pickMarker move pickMarker m)",
    "DEF run m( turnRight IF c( rightIsClear c) i( move putMarker i) m)",
    (
        "DEF run m( REPEAT R=3 r( move IFELSE c( leftIsClear c) i( turnLeft i) ELSE e( "
        "turnRight e) r) m)"
    ),
)

#: Figures the spec reports for the original implementation (one core).
ORIGINAL_FIGURES = {
    "interpreter actions/s": "13-15 k",
    "program executions/s (8x8)": "~500",
    "task evaluations/s (10 rollouts)": "~40",
    "dataset programs/s (1 process)": "6.7",
}


# ---------------------------------------------------------------------------- reference
class TensorKarel:
    """The original's style of world: a NumPy ``(H, W, 16)`` state tensor plus history."""

    def __init__(self, world: World) -> None:
        self.s = world.to_tensor()
        self.h, self.w = world.height, world.width
        self.s_h = [self.s.copy()]
        self.a_h: list[int] = []

    def agent(self) -> tuple[int, int, int]:
        r, c, d = np.argwhere(self.s[:, :, :4])[0]
        return int(r), int(c), int(d)

    def count(self, r: int, c: int) -> int:
        return int(np.argmax(self.s[r, c, 5:16]))

    def clear(self, r: int, c: int, d: int) -> bool:
        rr, cc = r + DELTAS[d][0], c + DELTAS[d][1]
        return 0 <= rr < self.h and 0 <= cc < self.w and not self.s[rr, cc, 4]

    def cond(self, name: str) -> bool:
        r, c, d = self.agent()
        if name == "frontIsClear":
            return self.clear(r, c, d)
        if name == "leftIsClear":
            return self.clear(r, c, (d + 3) % 4)
        if name == "rightIsClear":
            return self.clear(r, c, (d + 1) % 4)
        if name == "markersPresent":
            return self.count(r, c) > 0
        return self.count(r, c) == 0

    def act(self, name: str) -> int:
        r, c, d = self.agent()
        s = self.s
        if name == "move":
            a = 0
            if self.clear(r, c, d):
                s[r, c, d] = False
                s[r + DELTAS[d][0], c + DELTAS[d][1], d] = True
            else:
                s[r, c, d] = False
                s[r, c, (d + 2) % 4] = True
        elif name in ("turnLeft", "turnRight"):
            a = 1 if name == "turnLeft" else 2
            s[r, c, d] = False
            s[r, c, (d + 3) % 4 if a == 1 else (d + 1) % 4] = True
        else:
            k = self.count(r, c)
            a = 3 if name == "pickMarker" else 4
            new = k - 1 if a == 3 else k + 1
            if 0 <= new <= 9:
                s[r, c, 5:16] = False
                s[r, c, 5 + new] = True
        self.s_h.append(s.copy())
        self.a_h.append(a)
        return a


def run_reference(
    program: Program,
    karel: TensorKarel,
    budget: int = DEFAULT_BUDGET,
    on_action: Callable[[TensorKarel, int], None] | None = None,
) -> tuple[int, bool]:
    """Tree-walking §6.2 interpreter on a `TensorKarel`; returns (final counter, finished)."""

    def act(name: str) -> None:
        a = karel.act(name)
        if on_action is not None:
            on_action(karel, a)

    return walk_no_crash(program, budget, karel.cond, act)


def _tensor_reward(task: str, karel: TensorKarel, ctx: dict[str, Any]) -> float:
    """The task reward computed on the state tensor (reference side)."""
    s = karel.s
    counts = np.argmax(s[:, :, 5:16], axis=2)
    r, c, _ = karel.agent()
    h, w = karel.h, karel.w
    total_before = ctx["total"]
    ctx["total"] = int(counts.sum())
    if task in ("maze", "stairclimber"):
        hit = (r, c) == ctx["goal"]
        if task == "stairclimber":
            first = hit and not ctx["reached"]
            ctx["reached"] = ctx["reached"] or hit
            return 1.0 if first else 0.0
        return 1.0 if hit else 0.0
    if task == "harvester":
        return (ctx["cells"] - total_before) / ctx["cells"]
    if task == "fourcorner":
        reward = 0.25 * int(np.sum(counts[[1, h - 2, h - 2, 1], [1, 1, w - 2, w - 2]] == 1))
        return 0.0 if total_before - 4 * reward > 0 else reward
    if task == "cleanhouse":
        rows, cols = ctx["cells"]
        return float(np.mean(counts[rows, cols] == 0))
    # topoff
    k = 0
    for col in range(1, c + 1):
        if counts[h - 2, col] != ctx["targets"][col]:
            break
        k += 1
    if r == h - 2 and c == w - 2 and k == w - 2:
        k += 1
    return k / (w - 1)


def evaluate_reference(task: Task, program: str, num_worlds: int = 10) -> float:
    """The task return computed the original's way (tensor world, per-step rewards)."""
    text = program_text(program)
    if text is None or not is_valid(text):
        return task.options.invalid_return
    prog = parse(text)
    name = task.spec.name
    scores = []
    for init in task.initial_worlds[:num_worlds]:
        karel = TensorKarel(init)
        counts = np.argmax(karel.s[:, :, 5:16], axis=2)
        ctx: dict[str, Any] = {"total": int(counts.sum()), "reached": False}
        if name in ("maze", "stairclimber"):
            ctx["goal"] = tuple(int(x) for x in np.argwhere(counts > 0)[0])
        elif name == "harvester":
            ctx["cells"] = int(np.sum(counts > 0))
        elif name == "cleanhouse":
            mask = counts > 0
            mask[2, 12] = False
            ctx["cells"] = np.nonzero(mask)
        elif name == "topoff":
            ctx["targets"] = [2 if x else 0 for x in counts[init.height - 2]]
        rewards: list[float] = []

        def on_action(
            k: TensorKarel, _a: int, ctx: dict[str, Any] = ctx, rewards: list[float] = rewards
        ) -> None:
            rewards.append(_tensor_reward(name, k, ctx))

        run_reference(prog, karel, task.options.budget, on_action)
        scores.append(rewards[-1] if len(rewards) > 1 else 0.0)
    return float(np.mean(scores)) + task.options.syntax_bonus


# ---------------------------------------------------------------------------- measurement
@dataclass
class BenchRow:
    """One line of the benchmark table."""

    name: str
    ours: float
    baseline: float | None
    unit: str = "/s"
    note: str = ""
    table: str = "engine"

    @property
    def ratio(self) -> float | None:
        return self.ours / self.baseline if self.baseline else None


def _rate(fn: Callable[[], int], seconds: float) -> float:
    """Units per second of ``fn`` (which returns the units it did), over about ``seconds``."""
    fn()  # warm-up
    units = 0
    start = time.process_time()
    elapsed = 0.0
    while elapsed < seconds:
        units += fn()
        elapsed = time.process_time() - start
    return units / elapsed


def bench_worlds(seed: int = 0) -> list[World]:
    """The 8×8 benchmark worlds: 5 MAZE and 5 HARVESTER initial worlds."""
    maze = Task(get_spec("maze"), seed=seed, num_worlds=5)
    harvester = Task(get_spec("harvester"), seed=seed, num_worlds=5)
    return maze.initial_worlds + harvester.initial_worlds


def measure_interpreter(seconds: float, seed: int = 0) -> tuple[BenchRow, BenchRow]:
    """Actions/s and program executions/s on 8×8 worlds, compiled vs reference."""
    worlds = bench_worlds(seed)
    programs = [parse(p) for p in BENCH_PROGRAMS]
    compiled = [compile_program(p) for p in BENCH_PROGRAMS]
    runs = len(programs) * len(worlds)
    totals = {"ours": 0, "ref": 0}

    def ours() -> int:
        na = 0
        for fn in compiled:
            for w in worlds:
                na += len(fn(w.copy())[0])
        totals["ours"] = na
        return na

    def ref() -> int:
        na = 0
        for p in programs:
            for w in worlds:
                k = TensorKarel(w)
                run_reference(p, k)
                na += len(k.a_h)
        totals["ref"] = na
        return na

    ours_actions = _rate(ours, seconds)
    ref_actions = _rate(ref, seconds)
    per_pass_ours = totals["ours"] / runs
    per_pass_ref = totals["ref"] / runs
    return (
        BenchRow("interpreter actions/s", ours_actions, ref_actions),
        BenchRow(
            "program executions/s (8x8)",
            ours_actions / per_pass_ours,
            ref_actions / per_pass_ref,
            note=f"{len(programs)} programs x {len(worlds)} worlds",
        ),
    )


def measure_tasks(seconds: float, seed: int = 0, tasks: Sequence[str] = ()) -> list[BenchRow]:
    """Task evaluations/s (10 rollouts each), compilation included (cache cleared)."""
    names = list(tasks) or list(TASKS)
    bound = [Task(get_spec(n), seed=seed, num_worlds=10) for n in names]
    per = seconds / 2

    def ours() -> int:
        count = 0
        for t in bound:
            _compile_text.cache_clear()
            for p in BENCH_PROGRAMS:
                t.evaluate(p)
                count += 1
        return count

    def ours_cached() -> int:
        count = 0
        for t in bound:
            for p in BENCH_PROGRAMS:
                t.evaluate(p)
                count += 1
        return count

    def ref() -> int:
        count = 0
        for t in bound:
            for p in BENCH_PROGRAMS:
                evaluate_reference(t, p)
                count += 1
        return count

    baseline = _rate(ref, seconds)
    return [
        BenchRow(
            "task evaluations/s (10 rollouts)",
            _rate(ours, seconds),
            baseline,
            note="compilation included",
        ),
        BenchRow(
            "task evaluations/s, compiled program cached",
            _rate(ours_cached, per),
            baseline,
        ),
    ]


def extra_rows(seconds: float, seed: int) -> list[BenchRow]:
    """Rows contributed by other modules (the dataset generator's ``bench_generation``).

    The hook contract: ``leaps_karel.dataset.bench_generation(seconds=…, seed=…)`` returns a list
    of dicts with keys ``name``, ``ours`` and optionally ``baseline``, ``unit``, ``note``.
    """
    try:
        from leaps_karel import dataset  # type: ignore[attr-defined]
    except ImportError:
        return []
    fn = getattr(dataset, "bench_generation", None)
    if fn is None:
        return []
    return [BenchRow(**row) for row in fn(seconds=seconds, seed=seed)]


def format_table(rows: Sequence[BenchRow]) -> str:
    """A Markdown table of the engine rows, then one of the learning rows (if any)."""
    lines = [
        "| measurement | ours | reference (same run) | ratio | original (spec) | note |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        if r.table != "engine":
            continue
        base = f"{r.baseline:,.0f}{r.unit}" if r.baseline else "-"
        ratio = f"{r.ratio:.1f}x" if r.ratio else "-"
        original = ORIGINAL_FIGURES.get(r.name, "-")
        lines.append(
            f"| {r.name} | {r.ours:,.0f}{r.unit} | {base} | {ratio} | {original} | {r.note} |"
        )
    learning = [r for r in rows if r.table == "learning"]
    if learning:
        lines += [
            "",
            "Learning (wall time, one process; baseline = the original's figure of the spec, "
            "or the straightforward implementation in the same run where the note says so):",
            "",
            "| measurement | ours | baseline | ratio | note |",
            "| --- | ---: | ---: | ---: | --- |",
        ]
        for r in learning:
            base = f"{r.baseline:,.2f}{r.unit}" if r.baseline else "-"
            ratio = f"{r.ratio:.1f}x" if r.ratio else "-"
            lines.append(f"| {r.name} | {r.ours:,.2f}{r.unit} | {base} | {ratio} | {r.note} |")
    return "\n".join(lines)


def run_bench(seconds: float = 1.0, seed: int = 0, tasks: Sequence[str] = ()) -> list[BenchRow]:
    """All measurements."""
    rows = list(measure_interpreter(seconds, seed))
    rows += measure_tasks(seconds, seed, tasks)
    rows += extra_rows(seconds, seed)
    try:
        from leaps_karel.learn.cem_bench import cem_rows
    except ImportError:  # an install without the learn extra
        return rows
    rows += [BenchRow(**row) for row in cem_rows(seconds, seed, tasks)]
    return rows
