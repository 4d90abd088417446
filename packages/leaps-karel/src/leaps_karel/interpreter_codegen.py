"""Code generation: a Karel program as the source of one Python function (spec §6).

`program_source` translates a program into a function that keeps the agent as one integer
``q = 4 · cell + dir`` and does every move, turn and perception by a table lookup
(`World.tables`); budget checks between two world operations are merged into one test, and
decided at compile time wherever the counter is a known constant. Compiled and cached by
:mod:`leaps_karel.interpreter`.
"""

from __future__ import annotations

from typing import Any

from leaps_karel.dsl import (
    Action,
    Cond,
    If,
    IfElse,
    Prim,
    Program,
    Repeat,
    Stmt,
    While,
)
from leaps_karel.interpreter_reference import DEFAULT_BUDGET, Mode


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
                self.loop(f"while {_cond_src(cond)}:", body)
            case Repeat(times, body):
                self.loop(f"for _ in range({times}):", body)

    def loop(self, header: str, body: tuple[Stmt, ...]) -> None:
        """A ``while`` or ``for`` loop: the crash check, the header, then the body."""
        self.check()
        self.emit(header)
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
