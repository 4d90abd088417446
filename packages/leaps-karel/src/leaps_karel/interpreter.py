"""Program execution with the original LEAPS semantics, compiled to Python for speed.

Two semantics are provided (spec §3, §6):

* ``mode="no_crash"`` (default; every task reward): a blocked ``move`` turns the agent 180°,
  failing ``pickMarker`` / ``putMarker`` do nothing, failed actions are still recorded. The call
  counter ``n`` follows the exact accounting of §6.2 (statement wrappers, left-deep sequences,
  conditions checked without incrementing, actions free) and execution silently stops when a
  check finds ``n > budget``.
* ``mode="crash"`` (the dataset-generation interpreter, §6.5): a failing action aborts with
  status ``"crash"``; a counter of *completed* statement-level nodes is checked before entering
  each such node and aborts with status ``"timeout"`` once it exceeds the budget. The strict
  grammar applies (nested ``not`` is a parse error).

Each program is translated once into the source of a Python function (`program_source`) that
keeps the agent as one integer ``q = 4 · cell + dir`` and does every move, turn and perception
by a table lookup (`World.tables`); budget checks between two world operations are merged into
one test, and decided at compile time wherever the counter is a known constant (everywhere
outside loops, and below a known bound). The function is compiled and cached by program text.
`execute_reference` is a direct tree-walker of the same rules, used as a fallback for programs
nested too deeply for Python's compiler and as an independent cross-check in the tests.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from leaps_karel.dsl import (
    Action,
    Cond,
    If,
    IfElse,
    Not,
    Prim,
    Program,
    Repeat,
    Stmt,
    While,
    parse,
    to_text,
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


class _Stop(Exception):
    pass


class _Timeout(Exception):
    pass


class _Crash(Exception):
    pass


# ---------------------------------------------------------------------------- code generation
_COND_SRC = {
    "frontIsClear": "fc[q]",
    "leftIsClear": "lc[q]",
    "rightIsClear": "rc[q]",
    "markersPresent": "mk[q >> 2]",
    "noMarkersPresent": "not mk[q >> 2]",
}

# The agent is the single integer q = 4 * cell + dir and every world operation is a table
# lookup (see `World.tables`); `A(k)` records an action (the counting variant replaces it).
_ACTION_SRC_NO_CRASH = {
    "move": ["q = mv[q]", "A(0)"],
    "turnLeft": ["q = tl[q]", "A(1)"],
    "turnRight": ["q = tr[q]", "A(2)"],
    "pickMarker": ["c = q >> 2", "dl = _PICK[mk[c]]", "mk[c] += dl", "A(3)"],
    "putMarker": ["c = q >> 2", "dl = _PUT[mk[c]]", "mk[c] += dl", "A(4)"],
}

_ACTION_SRC_CRASH = {
    "move": ["t = nq[q]", "if t < 0:", "    raise _Crash", "q = t", "A(0)"],
    "turnLeft": ["q = tl[q]", "A(1)"],
    "turnRight": ["q = tr[q]", "A(2)"],
    "pickMarker": [
        "c = q >> 2",
        "if not mk[c]:",
        "    raise _Crash",
        "mk[c] -= 1",
        "dl = -1",
        "A(3)",
    ],
    "putMarker": [
        "c = q >> 2",
        "if mk[c] >= 9:",
        "    raise _Crash",
        "mk[c] += 1",
        "dl = 1",
        "A(4)",
    ],
}
#: Marker change of a no-crash pick / put by current count 0..10.
_PICK = (0, *([-1] * 10))
_PUT = (*([1] * 9), 0, 0)


def _cond_src(cond: Cond) -> str:
    if isinstance(cond, Prim):
        return _COND_SRC[cond.name]
    return f"not ({_cond_src(cond.cond)})"


class _NoCrashGen:
    """Emits the §6.2 accounting as Python source with statically resolved budget checks.

    Pending work between two world operations is a string of ``C`` (check ``n > budget``) and
    ``I`` (``n += 1``) tokens; `flush` turns it into at most one test and one addition. Until
    the first loop (and along branches entered with a known counter) the counter is a
    compile-time constant (``static``): its checks are decided while compiling and cost
    nothing at run time; a failing one becomes an unconditional stop (``dead`` code after it).
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.lines: list[str] = []
        self.depth = 1
        self.pending: list[str] = []
        self.clean = False  # dynamic mode: a check passed at the current value of n
        self.static: int | None = 0  # the counter's value when known at compile time
        self.bound: int | None = None  # dynamic mode: an upper bound of n, when known
        self.dead = False  # everything emitted now is unreachable

    def emit(self, line: str) -> None:
        if not self.dead:
            self.lines.append("    " * self.depth + line)

    def flush(self) -> None:
        offsets: list[int] = []
        k = 0
        for t in self.pending:
            if t == "I":
                k += 1
            elif not offsets or offsets[-1] != k:
                offsets.append(k)
        self.pending = []
        if self.dead:
            return
        b = self.budget
        if self.static is not None:
            for o in offsets:
                if self.static + o > b:
                    self.emit(f"raise _Stop({self.static + o})")
                    self.dead = True
                    return
            self.static += k
            return
        if self.clean and offsets and offsets[0] == 0:
            offsets.pop(0)
        if offsets and self.bound is not None and self.bound + offsets[-1] <= b:
            offsets = []  # these checks can never fail
        if offsets:
            lo, hi = offsets[0], offsets[-1]
            if offsets == list(range(lo, hi + 1)):
                # First failing check: max(n + lo, b + 1); the handler applies the max.
                value = f"n + {lo}" if lo else "n"
            else:
                value = f"_first_fail(n, {tuple(offsets)!r}, {b})"
            self.emit(f"if n > {b - hi}: raise _Stop({value})")
            self.clean = hi == k
        else:
            self.clean = self.clean and k == 0
        if k:
            self.emit(f"n += {k}")
        if self.bound is not None:
            self.bound += k
            self.clean = self.bound <= b

    def materialize(self) -> None:
        """Switch to a run-time counter (before loops)."""
        if self.static is not None:
            self.emit(f"n = {self.static}")
            self.clean = self.static <= self.budget
            self.bound = self.static
            self.static = None

    def program(self, prog: Program) -> None:
        self.pending += ["C", "I"]
        self.block(prog.body)
        self.flush()
        self.materialize()

    def block(self, stmts: tuple[Stmt, ...]) -> None:
        # Left-deep binary sequence of statement wrappers: B1 = S(s1), Bk = S(SEQ(Bk-1, S(sk))).
        m = len(stmts)
        # Entering Bm … B2: each is S (C I) then SEQ (C I); then B1 = S (C I).
        self.pending += ["C", "I", "C", "I"] * (m - 1) + ["C", "I"]
        self.stmt(stmts[0])
        for s in stmts[1:]:
            self.pending += ["C", "C", "I"]  # SEQ's second check, then S(sk)
            self.stmt(s)

    def _branch(self, body: tuple[Stmt, ...] | None) -> tuple[list[str], tuple[Any, ...]]:
        """Generate a branch body into its own line list; returns (lines, end state)."""
        saved = self.lines
        self.lines = []
        self.depth += 1
        if body is not None:
            self.block(body)
            self.flush()
        self.depth -= 1
        lines = self.lines
        self.lines = saved
        return lines, (self.static, self.clean, self.dead, self.bound)

    def _conditional(self, cond: Cond, then: tuple[Stmt, ...], orelse: tuple[Stmt, ...] | None):
        self.pending += ["C", "I", "C"]
        self.flush()
        if self.dead:
            return
        start = (self.static, self.clean, self.dead, self.bound)
        then_lines, then_end = self._branch(then)
        self.static, self.clean, self.dead, self.bound = start
        else_lines, else_end = self._branch(orelse)
        pad = "    " * (self.depth + 1)
        if then_end[2] or else_end[2]:
            # At most one branch falls through: its state continues.
            end = else_end if then_end[2] else then_end
            if then_end[2] and else_end[2]:
                end = (None, True, True, None)
        elif then_end[0] is not None and then_end[0] == else_end[0]:
            end = then_end
        else:
            cleans = []
            bounds = []
            for lines, st in ((then_lines, then_end), (else_lines, else_end)):
                if st[0] is not None:
                    lines.append(f"{pad}n = {st[0]}")
                    cleans.append(st[0] <= self.budget)
                    bounds.append(st[0])
                else:
                    cleans.append(st[1])
                    bounds.append(st[3])
            bound = None if None in bounds else max(b for b in bounds if b is not None)
            end = (None, all(cleans), False, bound)
        self.static, self.clean, self.dead, self.bound = start
        self.emit(f"if {_cond_src(cond)}:")
        self.lines.extend(then_lines or [pad + "pass"])
        if else_lines:
            self.emit("else:")
            self.lines.extend(else_lines)
        self.static, self.clean, self.dead, self.bound = end

    def stmt(self, s: Stmt) -> None:
        match s:
            case Action(name):
                self.pending.append("C")
                self.flush()
                for line in _ACTION_SRC_NO_CRASH[name]:
                    self.emit(line)
            case If(cond, body):
                self._conditional(cond, body, None)
            case IfElse(cond, then, orelse):
                self._conditional(cond, then, orelse)
            case While(cond, body):
                self.pending += ["C", "I", "C"]
                self.flush()
                self.materialize()
                self.bound = None
                self.emit(f"while {_cond_src(cond)}:")
                self.depth += 1
                self.clean = True
                self.block(body)
                self.pending.append("C")
                self.flush()
                self.depth -= 1
                self.clean = True
            case Repeat(times, body):
                self.pending += ["C", "I"]
                self.flush()
                if times > 0:
                    self.materialize()
                    self.bound = None
                    self.emit(f"for _ in range({times}):")
                    self.depth += 1
                    self.clean = False
                    self.block(body)
                    self.flush()
                    self.depth -= 1
                    self.clean = False


class _CrashGen:
    """Emits the dataset-generation interpreter (§6.5): completed-node counter, crash mode."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.lines: list[str] = []
        self.depth = 1
        self.clean = False  # a check passed at the current value of n

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def check(self) -> None:
        if not self.clean:
            self.emit(f"if n > {self.budget}:")
            self.emit("    raise _Timeout")
            self.clean = True

    def done(self) -> None:
        self.emit("n += 1")
        self.clean = False

    def program(self, prog: Program) -> None:
        self.block(prog.body)

    def block(self, stmts: tuple[Stmt, ...]) -> None:
        # The yacc-built tree of the dataset interpreter nests sequences to the right:
        # S(SEQ(S(s1), S(SEQ(S(s2), …)))). Entering a node checks, completing it increments.
        if len(stmts) == 1:
            self.wrapped(stmts[0])
            return
        self.check()  # S
        self.check()  # SEQ
        self.wrapped(stmts[0])
        self.block(stmts[1:])
        self.done()  # SEQ completes
        self.done()  # its S wrapper completes

    def wrapped(self, s: Stmt) -> None:
        self.check()  # S
        self.stmt(s)
        self.done()

    def stmt(self, s: Stmt) -> None:
        match s:
            case Action(name):
                for line in _ACTION_SRC_CRASH[name]:
                    self.emit(line)
            case If(cond, body):
                self.check()
                self.emit(f"if {_cond_src(cond)}:")
                self.depth += 1
                self.block(body)
                self.depth -= 1
                self.clean = False
                self.done()
            case IfElse(cond, then, orelse):
                self.check()
                self.emit(f"if {_cond_src(cond)}:")
                self.depth += 1
                self.block(then)
                self.depth -= 1
                self.emit("else:")
                self.depth += 1
                self.clean = True
                self.block(orelse)
                self.depth -= 1
                self.clean = False
                self.done()
            case While(cond, body):
                self.check()
                self.emit(f"while {_cond_src(cond)}:")
                self.depth += 1
                self.clean = False
                self.block(body)
                self.depth -= 1
                self.clean = False
                self.done()
            case Repeat(times, body):
                self.check()
                self.emit(f"for _ in range({times}):")
                self.depth += 1
                self.clean = False
                self.block(body)
                self.depth -= 1
                self.clean = False
                self.done()


def _first_fail(n: int, offsets: tuple[int, ...], budget: int) -> int:
    for o in offsets:
        if n + o > budget:
            return n + o
    raise AssertionError("no failing check")


def program_source(
    program: Program,
    *,
    mode: Mode = "no_crash",
    budget: int = DEFAULT_BUDGET,
    record: bool = True,
) -> str:
    """The Python source a program compiles to (for inspection and debugging).

    With ``record=False`` the function counts actions instead of recording them.
    """
    if mode == "no_crash":
        gen: _NoCrashGen | _CrashGen = _NoCrashGen(budget)
        handlers = [
            "    except _Stop as stop:",
            f"        n = max(stop.args[0], {budget + 1})",
            "        st = 1",
        ]
    elif mode == "crash":
        gen = _CrashGen(budget)
        handlers = [
            "    except _Timeout:",
            "        st = 1",
            "    except _Crash:",
            "        st = 2",
        ]
    else:
        raise ValueError(f"unknown mode {mode!r}; use 'no_crash' or 'crash'")
    gen.depth = 2
    gen.program(program)
    body = [*gen.lines, "        st = 0"]
    if record:
        prologue = ["def _run(mk, nq, mv, fc, lc, rc, tl, tr, q, acts, A, n=0, dl=0):", "    try:"]
        ret = "    return q, acts, n, st, (dl if acts and acts[-1] >= 3 else 0)"
    else:
        prologue = [
            "def _run(mk, nq, mv, fc, lc, rc, tl, tr, q, n=0, dl=0, na=0, lp=-1):",
            "    try:",
        ]
        ret = "    return q, na, n, st, (dl if lp == na else 0)"
        for i, line in enumerate(body):
            stripped = line.lstrip()
            if stripped.startswith("A(") and stripped.endswith(")"):
                indent = line[: len(line) - len(stripped)]
                body[i] = indent + ("na += 1; lp = na" if stripped[2] in "34" else "na += 1")
    return "\n".join([*prologue, *body, *handlers, ret]) + "\n"


def _recording(fn: Callable[..., Any]) -> CompiledProgram:
    def run(world: World) -> RawResult:
        acts: list[int] = []
        q, acts, n, st, dl = fn(
            world.markers, *world.tables, world.pos * 4 + world.dir, acts, acts.append
        )
        world.pos = q >> 2
        world.dir = q & 3
        return acts, n, st, dl

    return run


def _counting(fn: Callable[..., Any]) -> CompiledProgram:
    def run(world: World) -> RawResult:
        q, na, n, st, dl = fn(world.markers, *world.tables, world.pos * 4 + world.dir)
        world.pos = q >> 2
        world.dir = q & 3
        return na, n, st, dl

    return run


def _compile(program: Program, mode: Mode, budget: int, record: bool) -> CompiledProgram:
    src = program_source(program, mode=mode, budget=budget, record=record)
    namespace: dict[str, object] = {
        "_Stop": _Stop,
        "_Timeout": _Timeout,
        "_Crash": _Crash,
        "_first_fail": _first_fail,
        "_PICK": _PICK,
        "_PUT": _PUT,
    }
    try:
        code = compile(src, "<karel program>", "exec")
    except (SyntaxError, RecursionError, MemoryError):
        # Nested too deeply for Python's compiler: interpret the tree instead.
        return functools.partial(_reference_raw, program, mode, budget, record)
    exec(code, namespace)
    fn: Callable[..., Any] = namespace["_run"]  # type: ignore[assignment]
    return _recording(fn) if record else _counting(fn)


@functools.lru_cache(maxsize=8192)
def _compile_text(text: str, mode: Mode, budget: int, record: bool) -> CompiledProgram:
    return _compile(parse(text, strict=mode == "crash"), mode, budget, record)


def compile_program(
    program: Program | str,
    *,
    mode: Mode = "no_crash",
    budget: int = DEFAULT_BUDGET,
    record: bool = True,
) -> CompiledProgram:
    """Compile a program into a fast function ``f(world) -> (actions, n, status, delta)``.

    The function mutates ``world`` in place (markers, agent) and returns the executed actions
    (with ``record=False`` only their number), the final counter, a status code (0 finished,
    1 budget stop / timeout, 2 crash) and the marker change (+1 / -1 / 0) made by the last
    action. Compiled functions are cached by program text.

    Raises:
        ParseError: unparsable program text (in crash mode also a nested ``not``).
    """
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    text = program if isinstance(program, str) else to_text(program)
    return _compile_text(" ".join(text.split()), mode, budget, record)


def execute(
    program: Program | str,
    world: World,
    budget: int = DEFAULT_BUDGET,
    *,
    mode: Mode = "no_crash",
    in_place: bool = False,
    history: bool = False,
) -> ExecutionResult:
    """Run a program on a world with the original's semantics.

    Args:
        program: a `Program` or program text.
        world: the initial world (copied unless ``in_place``).
        budget: the call budget (220 in the original).
        mode: ``"no_crash"`` (rewards) or ``"crash"`` (dataset generation).
        in_place: mutate ``world`` instead of a copy.
        history: also record every visited state (``result.states``).

    Returns:
        The executed actions, final world, final counter and whether the program finished.

    Raises:
        ParseError: unparsable program text.
    """
    fn = compile_program(program, mode=mode, budget=budget)
    start = world.copy() if history else None
    w = world if in_place else world.copy()
    actions, n, st, _ = fn(w)
    states = replay(start, actions) if start is not None else None
    return ExecutionResult(actions, w, n, st == 0, _STATUS_NAMES[(mode, st)], states)


def replay(world: World, actions: list[int]) -> list[World]:
    """States visited by an action sequence (no-crash mode): ``len(actions) + 1`` worlds."""
    w = world.copy()
    states = [w.copy()]
    for a in actions:
        w.step(a)
        states.append(w.copy())
    return states


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
