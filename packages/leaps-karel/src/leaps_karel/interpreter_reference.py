"""Interpreter results and the tree-walking reference interpreter.

`ExecutionResult` and the shared constants live here; `execute_reference` and
`walk_no_crash` walk the program tree with the rules of §6 directly — slow and plainly
correct: the fallback of :mod:`leaps_karel.interpreter` for programs nested too deeply to
compile, and an independent cross-check in the tests and the benchmark.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from leaps_karel.dsl import (
    Action,
    Cond,
    If,
    IfElse,
    Not,
    Program,
    Repeat,
    Stmt,
    While,
    parse,
)
from leaps_karel.world import KarelCrash, World

if TYPE_CHECKING:
    import numpy as np

#: The original's call budget.
DEFAULT_BUDGET = 220

Mode = Literal["no_crash", "crash"]
Status = Literal["ok", "budget", "crash", "timeout"]

#: Raw result of a compiled program: (actions, final counter, status code, last marker delta).
#: Status codes: 0 finished, 1 budget exhausted / timeout, 2 crash.
RawResult = tuple[Any, int, int, int]
CompiledProgram = Callable[[World], RawResult]

_STATUS_NAMES: dict[tuple[str, int], Status] = {
    ("no_crash", 0): "ok",
    ("no_crash", 1): "budget",
    ("crash", 0): "ok",
    ("crash", 1): "timeout",
    ("crash", 2): "crash",
}


@dataclass
class ExecutionResult:
    """Outcome of one execution.

    Attributes:
        actions: executed action ids (0 move, 1 turnLeft, 2 turnRight, 3 pickMarker,
            4 putMarker), failed actions included in no-crash mode; in crash mode the failing
            action is not included.
        world: the final world.
        n: final value of the call counter (§6.2 accounting; the completed-node counter in
            crash mode).
        finished: whether the program ran to its end (no budget stop, crash or timeout).
        status: ``"ok"``, ``"budget"`` (no-crash budget stop), ``"crash"`` or ``"timeout"``.
        states: with ``history=True``, the visited worlds: the initial world and the world
            after every action (``len(states) == len(actions) + 1``); else None.
    """

    actions: list[int]
    world: World
    n: int
    finished: bool
    status: Status
    states: list[World] | None = None

    def state_tensors(self) -> np.ndarray:
        """The state history ``s_h`` as a ``(len(actions) + 1, H, W, 16)`` bool array.

        Raises:
            ValueError: the execution was run without ``history=True``.
        """
        if self.states is None:
            raise ValueError("run execute(..., history=True) to record the visited states")
        import numpy as np

        return np.stack([s.to_tensor() for s in self.states])

    def perceptions(self) -> np.ndarray:
        """The 5 perceptions of every visited state: ``(len(actions) + 1, 5)`` bool.

        Order: frontIsClear, leftIsClear, rightIsClear, markersPresent, noMarkersPresent.

        Raises:
            ValueError: the execution was run without ``history=True``.
        """
        if self.states is None:
            raise ValueError("run execute(..., history=True) to record the visited states")
        import numpy as np

        return np.asarray([s.perception() for s in self.states], dtype=bool)


# ---------------------------------------------------------------------------- reference
class _RefStop(Exception):
    pass


def execute_reference(
    program: Program | str,
    world: World,
    budget: int = DEFAULT_BUDGET,
    *,
    mode: Mode = "no_crash",
) -> ExecutionResult:
    """Tree-walking implementation of the same semantics (slow; cross-check and fallback)."""
    prog = parse(program, strict=mode == "crash") if isinstance(program, str) else program
    w = world.copy()
    actions, n, st, _ = _reference_raw(prog, mode, budget, True, w)
    return ExecutionResult(actions, w, n, st == 0, _STATUS_NAMES[(mode, st)])


def walk_no_crash(
    program: Program,
    budget: int,
    perceive: Callable[[str], bool],
    act: Callable[[str], None],
) -> tuple[int, bool]:
    """The §6.2 budget accounting as a plain tree walk (no-crash semantics).

    The slow, obviously-correct form of the compiled interpreter: the fallback for programs
    nested too deeply to compile, and the benchmark's reference. ``perceive(name)`` answers a
    perception (``"frontIsClear"`` …), ``act(name)`` performs an action.

    Returns:
        ``(final call counter, finished within the budget)``.
    """

    def cond(c: Cond) -> bool:
        return not cond(c.cond) if isinstance(c, Not) else perceive(c.name)

    def block(stmts: tuple[Stmt, ...], n: int) -> tuple[int, bool]:
        if len(stmts) == 1:
            return wrap(stmts[0], n)
        if n > budget:  # S
            return n, False
        n += 1
        if n > budget:  # SEQ
            return n, False
        n, ok = block(stmts[:-1], n + 1)
        if not ok or n > budget:
            return n, False
        return wrap(stmts[-1], n)

    def wrap(s: Stmt, n: int) -> tuple[int, bool]:
        if n > budget:
            return n, False
        return node(s, n + 1)

    def node(s: Stmt, n: int) -> tuple[int, bool]:
        if n > budget:
            return n, False
        match s:
            case Action(name):
                act(name)
                return n, True
            case Repeat(times, body):
                n += 1
                for _ in range(times):
                    n, ok = block(body, n)
                    if not ok:
                        return n, False
                return n, True
            case If(c, body):
                n += 1
                if n > budget:
                    return n, False
                return block(body, n) if cond(c) else (n, True)
            case IfElse(c, then, orelse):
                n += 1
                if n > budget:
                    return n, False
                return block(then if cond(c) else orelse, n)
            case While(c, body):
                n += 1
                if n > budget:
                    return n, False
                while cond(c):
                    n, ok = block(body, n)
                    if not ok or n > budget:
                        return n, False
                return n, True
        raise AssertionError(s)

    return block(program.body, 1)


def _reference_raw(
    program: Program, mode: Mode, budget: int, record: bool, world: World
) -> RawResult:
    out = _reference_trace(program, mode, budget, world)
    if record:
        return out
    return len(out[0]), out[1], out[2], out[3]


def _reference_trace(program: Program, mode: Mode, budget: int, world: World) -> RawResult:
    actions: list[int] = []
    delta = [0]
    crash = mode == "crash"
    codes = {"move": 0, "turnLeft": 1, "turnRight": 2, "pickMarker": 3, "putMarker": 4}

    perceptions = {
        "frontIsClear": world.front_is_clear,
        "leftIsClear": world.left_is_clear,
        "rightIsClear": world.right_is_clear,
        "markersPresent": world.markers_present,
        "noMarkersPresent": world.no_markers_present,
    }

    def perceive(name: str) -> bool:
        return perceptions[name]()

    def cond_value(c: Cond) -> bool:
        return not cond_value(c.cond) if isinstance(c, Not) else perceive(c.name)

    def act(name: str) -> None:
        a = codes[name]
        before = world.markers[world.pos]
        world.step(a, crash=crash)
        delta[0] = world.markers[world.pos] - before if a in (3, 4) else 0
        actions.append(a)

    if not crash:
        if budget < 0:
            return actions, 0, 1, delta[0]
        n, ok = walk_no_crash(program, budget, perceive, act)
        return actions, n, 0 if ok else 1, delta[0]

    counter = [0]

    def enter() -> None:
        if counter[0] > budget:
            raise _RefStop

    def cblock(stmts: tuple[Stmt, ...]) -> None:
        if len(stmts) == 1:
            cwrap(stmts[0])
            return
        enter()  # S
        enter()  # SEQ
        cwrap(stmts[0])
        cblock(stmts[1:])
        counter[0] += 2

    def cwrap(s: Stmt) -> None:
        enter()
        cnode(s)
        counter[0] += 1

    def cnode(s: Stmt) -> None:
        match s:
            case Action(name):
                act(name)
                return
            case If(c, body):
                enter()
                if cond_value(c):
                    cblock(body)
            case IfElse(c, then, orelse):
                enter()
                cblock(then if cond_value(c) else orelse)
            case While(c, body):
                enter()
                while cond_value(c):
                    cblock(body)
            case Repeat(k, body):
                enter()
                for _ in range(k):
                    cblock(body)
        counter[0] += 1

    try:
        cblock(program.body)
    except _RefStop:
        return actions, counter[0], 1, delta[0]
    except KarelCrash:
        return actions, counter[0], 2, delta[0]
    return actions, counter[0], 0, delta[0]
