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

The code generator is :mod:`leaps_karel.interpreter_codegen`, the reference interpreter and
`ExecutionResult` are in :mod:`leaps_karel.interpreter_reference`; everything is importable
from here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from leaps_karel.dsl import Program, parse, to_text
from leaps_karel.interpreter_codegen import (
    _PICK,
    _PUT,
    _Crash,
    _first_fail,
    _Stop,
    _Timeout,
    program_source,
)
from leaps_karel.interpreter_reference import (
    _STATUS_NAMES,
    DEFAULT_BUDGET,
    CompiledProgram,
    ExecutionResult,
    Mode,
    RawResult,
    Status,
    _reference_raw,
    execute_reference,
    walk_no_crash,
)
from leaps_karel.world import World

__all__ = [
    "DEFAULT_BUDGET",
    "CompiledProgram",
    "ExecutionResult",
    "Mode",
    "RawResult",
    "Status",
    "compile_program",
    "execute",
    "execute_reference",
    "program_source",
    "replay",
    "walk_no_crash",
]


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
