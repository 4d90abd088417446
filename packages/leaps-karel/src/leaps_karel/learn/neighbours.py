"""Program-space neighbourhoods: replace one AST node by a freshly sampled subtree.

The neighbourhood of Carvalho, Tjhia & Lelis (ICLR 2024, spec §9): a neighbour of a program
is the program with one uniformly chosen node — a statement or a condition — replaced by a
subtree drawn from the LEAPS probabilistic grammar (`leaps_karel.sampler.ProgramSampler`).
A statement is replaced by a fresh ``stmt`` expansion (one statement or a sequence, spliced
in place), a condition by a fresh condition. Neighbours stay within `Limits` (depth,
statements in a row, tokens) and differ from the program they come from. Torch-free.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass

from leaps_karel.dsl import (
    Cond,
    If,
    IfElse,
    Not,
    Prim,
    Program,
    Repeat,
    Stmt,
    While,
    count_tokens,
    parse,
)
from leaps_karel.sampler import ProgramSampler

Block = tuple[Stmt, ...]
#: A node's address: block index, then (field name, block index) pairs going down.
Path = tuple[int | str, ...]


@dataclass(frozen=True)
class Limits:
    """Size limits of every program the search visits (Carvalho et al.'s values).

    Attributes:
        max_depth: 1 + the deepest nesting of control structures (``DEF run m( move m)`` has
            depth 1, one ``WHILE`` around it depth 2).
        max_sequence: statements in one block at most.
        max_tokens: tokens of the program text at most (``DEF run m( … m)`` included).
    """

    max_depth: int = 4
    max_sequence: int = 6
    max_tokens: int = 45


def _blocks(stmt: Stmt) -> list[tuple[str, Block]]:
    match stmt:
        case While(_, body) | Repeat(_, body) | If(_, body):
            return [("body", body)]
        case IfElse(_, then, orelse):
            return [("then", then), ("orelse", orelse)]
        case _:
            return []


def program_depth(program: Program) -> int:
    """1 + the deepest nesting of control structures (WHILE, REPEAT, IF, IFELSE)."""

    def depth(block: Block) -> int:
        return max(1 + max((depth(b) for _, b in _blocks(s)), default=0) for s in block)

    return depth(program.body)


def longest_sequence(program: Program) -> int:
    """The most statements any one block of the program holds."""

    def longest(block: Block) -> int:
        return max([len(block), *(longest(b) for s in block for _, b in _blocks(s))])

    return longest(program.body)


def within_limits(program: Program, limits: Limits) -> bool:
    """Whether ``program`` respects every limit."""
    return (
        count_tokens(program) <= limits.max_tokens
        and program_depth(program) <= limits.max_depth
        and longest_sequence(program) <= limits.max_sequence
    )


def node_sites(program: Program) -> list[tuple[str, Path, int]]:
    """Every replaceable node: ``(kind, path, nesting)``, kind ``"stmt"`` or ``"cond"``.

    ``nesting`` counts the control structures around the node (a condition counts as inside
    its own statement's level).
    """
    out: list[tuple[str, Path, int]] = []

    def walk(block: Block, path: Path, nesting: int) -> None:
        for i, stmt in enumerate(block):
            here = (*path, i)
            out.append(("stmt", here, nesting))
            if isinstance(stmt, While | If | IfElse):
                out.append(("cond", here, nesting))
            for field, body in _blocks(stmt):
                walk(body, (*here, field), nesting + 1)

    walk(program.body, (), 0)
    return out


def _edit(block: Block, path: Path, change: Callable[[Stmt], Block]) -> Block:
    """``block`` with the statement at ``path`` replaced by ``change(statement)`` (spliced)."""
    i = int(path[0])
    if len(path) == 1:
        new: Block = change(block[i])
    else:
        field = str(path[1])
        inner = _edit(getattr(block[i], field), path[2:], change)
        new = (dataclasses.replace(block[i], **{field: inner}),)  # type: ignore[arg-type]
    return block[:i] + new + block[i + 1 :]


def _condition(tokens: list[str]) -> Cond:
    if tokens[0] == "not":
        return Not(_condition(tokens[2:-1]))
    return Prim(tokens[0])


class Neighbourhood:
    """Draws random programs and neighbours within `Limits`, deterministically from a seed.

    Args:
        seed: seeds both the node choice and the subtree sampler.
        limits: size limits of every program returned.

    Example:
        >>> hood = Neighbourhood(seed=0)
        >>> start = hood.random_program()
        >>> within_limits(hood.neighbour(start), hood.limits)
        True
    """

    #: Draws tried before giving up on one neighbour (then a random program is returned).
    MAX_TRIES = 200

    def __init__(self, seed: int = 0, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._rng = random.Random(seed)
        self._sampler = ProgramSampler(seed=seed)

    def random_program(self) -> Program:
        """A program of the LEAPS grammar within the limits (rejection sampling)."""
        while True:
            program = parse(self._sampler.sample_tokens())
            if within_limits(program, self.limits):
                return program

    def _fresh_block(self, nesting: int) -> Block:
        tokens = self._sampler.sample_statement_tokens(depth=1 + 2 * nesting, nesting=nesting)
        return parse(["DEF", "run", "m(", *tokens, "m)"]).body

    def _replace_condition(self, stmt: Stmt) -> Block:
        cond = _condition(self._sampler.sample_condition_tokens())
        assert isinstance(stmt, While | If | IfElse)
        return (dataclasses.replace(stmt, cond=cond),)

    def neighbour(self, program: Program) -> Program:
        """``program`` with one random node replaced by a fresh subtree, within the limits.

        Returns:
            A program different from ``program``; a fresh random program in the (practically
            unreachable) case that `MAX_TRIES` draws all break a limit or change nothing.
        """
        sites = node_sites(program)
        for _ in range(self.MAX_TRIES):
            kind, path, nesting = self._rng.choice(sites)
            if kind == "stmt":
                fresh = self._fresh_block(nesting)
                body = _edit(program.body, path, lambda _s, fresh=fresh: fresh)
            else:
                body = _edit(program.body, path, self._replace_condition)
            candidate = Program(body)
            if candidate != program and within_limits(candidate, self.limits):
                return candidate
        return self.random_program()
