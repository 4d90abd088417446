"""Random Karel programs from the LEAPS probabilistic grammar.

The sampler expands the DSL grammar top-down with the production probabilities and depth rules
of the original LEAPS dataset generator (spec §7). Every nonterminal child is expanded one level
deeper than its parent — including the intermediate ``stmt_stmt`` sequence nonterminal — so a
statement's sub-statements sit two levels below it. A ``stmt`` deeper than ``max_depth`` or
nested more than ``max_nesting_depth`` control structures deep is forced to be an action.

Draws are deterministic given the seed; they do not reproduce the original's NumPy stream, but
they reproduce its statistics (token lengths, construct frequencies, depths), which the tests
check against 5 000 recorded draws of the original.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import random
from collections.abc import Sequence

__all__ = [
    "ACTION_PROBS",
    "COND_NOT_PROB",
    "MAX_REPEAT",
    "PRIM_PROBS",
    "STMT_PROBS",
    "ProgramSampler",
    "SamplerConfig",
    "action_count_bounds",
]

STMT_PROBS: dict[str, float] = {
    "while": 0.15,
    "repeat": 0.03,
    "stmt_stmt": 0.50,
    "action": 0.20,
    "if": 0.08,
    "ifelse": 0.04,
}
"""Productions of ``stmt`` and their probabilities, in the original's order."""

COND_NOT_PROB = 0.1
"""Probability that a condition is ``not c( prim c)`` rather than a bare primitive."""

PRIM_PROBS: dict[str, float] = {
    "frontIsClear": 0.5,
    "leftIsClear": 0.15,
    "rightIsClear": 0.15,
    "markersPresent": 0.1,
    "noMarkersPresent": 0.1,
}
"""Perception primitives and their probabilities."""

ACTION_PROBS: dict[str, float] = {
    "move": 0.5,
    "turnRight": 0.15,
    "turnLeft": 0.15,
    "pickMarker": 0.1,
    "putMarker": 0.1,
}
"""Action tokens and their probabilities."""

MAX_REPEAT = 19
"""``REPEAT R=k`` draws k uniformly from ``0..MAX_REPEAT``."""


def _cumulative(probs: dict[str, float]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    names = tuple(probs)
    total = sum(probs.values())
    cum = tuple(c / total for c in itertools.accumulate(probs.values()))
    return names, cum


_STMT = _cumulative(STMT_PROBS)
_PRIM = _cumulative(PRIM_PROBS)
_ACTION = _cumulative(ACTION_PROBS)


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Depth limits of the probabilistic grammar (the dataset generator's defaults)."""

    max_depth: int = 6
    """A ``stmt`` expanded deeper than this is forced to be an action."""
    max_nesting_depth: int = 4
    """A ``stmt`` inside more control structures than this is forced to be an action."""


class ProgramSampler:
    """Draws random programs (token lists) from the LEAPS probabilistic grammar.

    Args:
        seed: seed of the sampler's private random stream (``random.Random``); the same seed
            gives the same sequence of programs on every platform.
        config: depth limits.

    Example:
        >>> sampler = ProgramSampler(seed=0)
        >>> tokens = sampler.sample_tokens()
        >>> tokens[:3], tokens[-1]
        (['DEF', 'run', 'm('], 'm)')
    """

    def __init__(self, seed: int = 0, config: SamplerConfig | None = None) -> None:
        self.config = config or SamplerConfig()
        self._rng = random.Random(seed)

    def sample_tokens(self) -> list[str]:
        """One program as a list of tokens, ``DEF run m( … m)`` included."""
        out = ["DEF", "run", "m("]
        # prog is at depth 0; its stmt child at depth 1, nesting 0.
        self._stmt(1, 0, out)
        out.append("m)")
        return out

    def sample(self) -> str:
        """One program as a space-separated token string."""
        return " ".join(self.sample_tokens())

    def sample_many(self, n: int) -> list[str]:
        """``n`` consecutive draws as token strings (duplicates kept)."""
        return [self.sample() for _ in range(n)]

    def sample_statement_tokens(self, depth: int = 1, nesting: int = 0) -> list[str]:
        """Tokens of one freshly expanded ``stmt`` (one statement or a sequence of several).

        Program-space search draws replacement subtrees with it.

        Args:
            depth: the grammar depth the ``stmt`` is expanded at (the program's own is 1).
            nesting: control structures around it (the depth rules of the sampler apply).
        """
        out: list[str] = []
        self._stmt(depth, nesting, out)
        return out

    def sample_condition_tokens(self) -> list[str]:
        """Tokens of one fresh condition: ``prim`` or ``not c( prim c)`` (no brackets around)."""
        out: list[str] = []
        self._cond(out)
        return out

    # --- expansion -------------------------------------------------------------------------

    def _pick(self, table: tuple[tuple[str, ...], tuple[float, ...]]) -> str:
        names, cum = table
        index = bisect.bisect_right(cum, self._rng.random())
        return names[min(index, len(names) - 1)]

    def _stmt(self, depth: int, nesting: int, out: list[str]) -> None:
        cfg = self.config
        if nesting > cfg.max_nesting_depth or depth > cfg.max_depth:
            out.append(self._pick(_ACTION))
            return
        production = self._pick(_STMT)
        # Children of the production's nonterminal are one level below it, and that
        # nonterminal is one level below this stmt: sub-statements sit at depth + 2.
        inner = depth + 2
        if production == "action":
            out.append(self._pick(_ACTION))
        elif production == "stmt_stmt":
            self._stmt(inner, nesting, out)
            self._stmt(inner, nesting, out)
        elif production == "while":
            out += ("WHILE", "c(")
            self._cond(out)
            out += ("c)", "w(")
            self._stmt(inner, nesting + 1, out)
            out.append("w)")
        elif production == "repeat":
            out += ("REPEAT", f"R={self._rng.randint(0, MAX_REPEAT)}", "r(")
            self._stmt(inner, nesting + 1, out)
            out.append("r)")
        elif production == "if":
            out += ("IF", "c(")
            self._cond(out)
            out += ("c)", "i(")
            self._stmt(inner, nesting + 1, out)
            out.append("i)")
        else:  # ifelse
            out += ("IFELSE", "c(")
            self._cond(out)
            out += ("c)", "i(")
            self._stmt(inner, nesting + 1, out)
            out += ("i)", "ELSE", "e(")
            self._stmt(inner, nesting + 1, out)
            out.append("e)")

    def _cond(self, out: list[str]) -> None:
        if self._rng.random() < COND_NOT_PROB:
            out += ("not", "c(", self._pick(_PRIM), "c)")
        else:
            out.append(self._pick(_PRIM))


_ACTIONS = frozenset(ACTION_PROBS)
_INFINITY = 1 << 30


def action_count_bounds(tokens: Sequence[str]) -> tuple[int, int]:
    """Lower and upper bound on the number of actions any complete execution performs.

    A static analysis of the token sequence (``DEF run m( … m)``): an ``IF`` may skip its
    body, an ``IFELSE`` takes either branch, a ``WHILE`` runs its body any number of times
    (upper bound ``2**30``), ``REPEAT R=k`` runs it exactly k times. A run that crashes or
    exhausts its budget stops early, so only *completed* executions are bounded. The dataset
    generator uses it to reject programs that can never produce a demonstration of acceptable
    length without spending their trials.

    Args:
        tokens: a program parsed by the sampler's grammar (nested ``not`` allowed).

    Returns:
        ``(low, high)`` with ``high`` capped at ``2**30``.
    """
    position = 3  # after DEF run m(

    def block(closer: str) -> tuple[int, int]:
        nonlocal position
        low = high = 0
        while tokens[position] != closer:
            lo, hi = statement()
            low, high = low + lo, min(high + hi, _INFINITY)
        position += 1
        return low, high

    def skip_cond() -> None:
        nonlocal position
        depth = 0
        while True:
            token = tokens[position]
            position += 1
            if token == "c(":
                depth += 1
            elif token == "c)":
                depth -= 1
                if depth == 0:
                    return

    def statement() -> tuple[int, int]:
        nonlocal position
        token = tokens[position]
        position += 1
        if token in _ACTIONS:
            return 1, 1
        if token == "WHILE":
            skip_cond()
            position += 1  # w(
            _lo, hi = block("w)")
            return 0, (_INFINITY if hi > 0 else 0)
        if token == "REPEAT":
            times = int(tokens[position][2:])
            position += 2  # R=k r(
            lo, hi = block("r)")
            return times * lo, min(times * hi, _INFINITY)
        if token == "IF":
            skip_cond()
            position += 1  # i(
            _lo, hi = block("i)")
            return 0, hi
        if token == "IFELSE":
            skip_cond()
            position += 1  # i(
            lo1, hi1 = block("i)")
            position += 2  # ELSE e(
            lo2, hi2 = block("e)")
            return min(lo1, lo2), max(hi1, hi2)
        raise ValueError(f"unexpected token {token!r} at position {position - 1}")

    return block("m)")
