"""LEAPS Karel: world, DSL, fast interpreter, the six LEAPS tasks and a gymnasium environment.

Quick start::

    import leaps_karel

    program = leaps_karel.parse("DEF run m( WHILE c( frontIsClear c) w( move w) m)")
    world = leaps_karel.World.from_text(["#####", "#...#", "#####"], (1, 1, 1))
    result = leaps_karel.execute(program, world)
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from leaps_karel.dsl import ParseError, Program, is_valid, parse, to_text, tokenize
from leaps_karel.interpreter import ExecutionResult, compile_program, execute
from leaps_karel.world import KarelCrash, World

__all__ = [
    "ExecutionResult",
    "KarelCrash",
    "ParseError",
    "Program",
    "World",
    "compile_program",
    "execute",
    "is_valid",
    "parse",
    "to_text",
    "tokenize",
]
try:
    __version__ = version("leaps-karel")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"
