"""The Karel DSL: vocabulary (50 tokens with the original ids), tokenizer, parser, printer.

Grammar (whitespace-separated tokens; every block holds at least one statement)::

    prog    := DEF run m( stmt m)
    stmt    := while | repeat | stmt stmt | action | if | ifelse
    while   := WHILE c( cond c) w( stmt w)
    repeat  := REPEAT R=k r( stmt r)              k ∈ {0, …, 19}
    if      := IF c( cond c) i( stmt i)
    ifelse  := IFELSE c( cond c) i( stmt i) ELSE e( stmt e)
    cond    := prim | not c( cond c)
    prim    := frontIsClear | leftIsClear | rightIsClear | markersPresent | noMarkersPresent
    action  := move | turnRight | turnLeft | pickMarker | putMarker

The executor grammar accepts nested ``not``; the sampler / dataset grammar (``strict=True``)
allows ``not`` only directly around a primitive.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from compkit_utils.errors import UserError

#: The 50 program tokens in the original id order (index = id).
TOKENS: tuple[str, ...] = (
    "DEF",
    "run",
    "m(",
    "m)",
    "move",
    "turnRight",
    "turnLeft",
    "pickMarker",
    "putMarker",
    "r(",
    "r)",
    *(f"R={k}" for k in range(20)),
    "REPEAT",
    "c(",
    "c)",
    "i(",
    "i)",
    "e(",
    "e)",
    "IF",
    "IFELSE",
    "ELSE",
    "frontIsClear",
    "leftIsClear",
    "rightIsClear",
    "markersPresent",
    "noMarkersPresent",
    "not",
    "w(",
    "w)",
    "WHILE",
)
#: token → id.
VOCAB: dict[str, int] = {t: i for i, t in enumerate(TOKENS)}
#: Number of program tokens (ids 0..49).
NUM_TOKENS = len(TOKENS)
#: Padding / end-of-program id used by the networks.
PAD_ID = 50

#: DSL action tokens, in token-id order.
ACTIONS = ("move", "turnRight", "turnLeft", "pickMarker", "putMarker")
#: Perception tokens, in spec order.
CONDITIONS = ("frontIsClear", "leftIsClear", "rightIsClear", "markersPresent", "noMarkersPresent")
#: Largest ``REPEAT`` count in the vocabulary.
MAX_REPEAT = 19


class ParseError(UserError):
    """A program that does not parse.

    The message names the token position and what was expected there.

    Attributes:
        position: 0-based index of the offending token (``len(tokens)`` for end of input).
        expected: a short description of what the parser expected there.
    """

    def __init__(self, message: str, position: int, expected: str) -> None:
        super().__init__(message)
        self.position = position
        self.expected = expected


# ---------------------------------------------------------------------------- AST
@dataclass(frozen=True, slots=True)
class Prim:
    """A perception ``frontIsClear`` … ``noMarkersPresent``."""

    name: str


@dataclass(frozen=True, slots=True)
class Not:
    """``not c( cond c)``."""

    cond: Cond


Cond = Prim | Not


@dataclass(frozen=True, slots=True)
class Action:
    """An action statement: ``move``, ``turnRight``, ``turnLeft``, ``pickMarker``, ``putMarker``."""

    name: str


@dataclass(frozen=True, slots=True)
class While:
    """``WHILE c( cond c) w( body w)``."""

    cond: Cond
    body: tuple[Stmt, ...]


@dataclass(frozen=True, slots=True)
class Repeat:
    """``REPEAT R=k r( body r)``."""

    times: int
    body: tuple[Stmt, ...]


@dataclass(frozen=True, slots=True)
class If:
    """``IF c( cond c) i( body i)``."""

    cond: Cond
    body: tuple[Stmt, ...]


@dataclass(frozen=True, slots=True)
class IfElse:
    """``IFELSE c( cond c) i( then w) ELSE e( orelse e)``."""

    cond: Cond
    then: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...]


Stmt = Action | While | Repeat | If | IfElse


@dataclass(frozen=True, slots=True)
class Program:
    """``DEF run m( body m)``: a block (tuple) of at least one statement."""

    body: tuple[Stmt, ...]

    def __str__(self) -> str:
        return to_text(self)


# ---------------------------------------------------------------------------- tokens
def _unknown_token(tok: str, position: int) -> ParseError:
    expected = (
        "a DSL token (DEF run m( … m), WHILE, IF, IFELSE, ELSE, REPEAT R=0..R=19, c( c), "
        "w( w), i( i), e( e), r( r), not, an action or a perception)"
    )
    return ParseError(
        f"parse error at token {position} ({tok!r}): unknown token; expected {expected}",
        position,
        "a DSL token",
    )


def tokenize(text: str) -> list[str]:
    """Split program text into tokens and check that each is in the vocabulary.

    Raises:
        ParseError: an unknown token, naming its position.
    """
    tokens = text.split()
    for i, tok in enumerate(tokens):
        if tok not in VOCAB:
            raise _unknown_token(tok, i)
    return tokens


def to_ids(tokens: Sequence[str] | Program | str) -> list[int]:
    """Token ids of a program (a `Program`, program text or a token list)."""
    if isinstance(tokens, Program):
        tokens = to_tokens(tokens)
    elif isinstance(tokens, str):
        tokens = tokenize(tokens)
    return [VOCAB[t] for t in tokens]


def ids_to_tokens(ids: Iterable[int]) -> list[str]:
    """Tokens of an id sequence; everything from the first id ≥ 50 (padding) on is dropped.

    Raises:
        ParseError: a negative id.
    """
    out = []
    for i, v in enumerate(ids):
        v = int(v)
        if v >= NUM_TOKENS:
            break
        if v < 0:
            raise ParseError(f"bad token id {v} at position {i}", i, "an id in 0..50")
        out.append(TOKENS[v])
    return out


def ids_to_text(ids: Iterable[int]) -> str:
    """Program text of an id sequence (padding and everything after it dropped)."""
    return " ".join(ids_to_tokens(ids))


# ---------------------------------------------------------------------------- parser
_BODY_CLOSE = {"m(": "m)", "w(": "w)", "r(": "r)", "i(": "i)", "e(": "e)"}
_STMT_START = ("WHILE", "REPEAT", "IF", "IFELSE", *ACTIONS)


class _Parser:
    def __init__(self, tokens: Sequence[str], strict: bool) -> None:
        self.toks = tokens
        self.i = 0
        self.strict = strict

    def fail(self, expected: str) -> ParseError:
        pos = self.i
        found = f"{self.toks[pos]!r}" if pos < len(self.toks) else "end of program"
        return ParseError(
            f"parse error at token {pos} ({found}): expected {expected}", pos, expected
        )

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def expect(self, tok: str) -> None:
        if self.peek() != tok:
            raise self.fail(repr(tok))
        self.i += 1

    def program(self) -> Program:
        self.expect("DEF")
        self.expect("run")
        body = self.block("m(")
        if self.i != len(self.toks):
            raise self.fail("end of program after 'm)'")
        return Program(body)

    def block(self, open_tok: str) -> tuple[Stmt, ...]:
        self.expect(open_tok)
        close = _BODY_CLOSE[open_tok]
        stmts: list[Stmt] = []
        while True:
            tok = self.peek()
            if tok == close and stmts:
                self.i += 1
                return tuple(stmts)
            if tok not in _STMT_START:
                kinds = "a statement (action, WHILE, REPEAT, IF or IFELSE)"
                raise self.fail(kinds if not stmts else f"{kinds} or {close!r}")
            stmts.append(self.stmt())

    def stmt(self) -> Stmt:
        tok = self.peek()
        self.i += 1
        if tok in ACTIONS:
            return Action(tok)
        if tok == "WHILE":
            cond = self.cond_block()
            return While(cond, self.block("w("))
        if tok == "IF":
            cond = self.cond_block()
            return If(cond, self.block("i("))
        if tok == "IFELSE":
            cond = self.cond_block()
            then = self.block("i(")
            self.expect("ELSE")
            return IfElse(cond, then, self.block("e("))
        # REPEAT
        count = self.peek()
        if count is None or not count.startswith("R="):
            raise self.fail("a repeat count R=0..R=19")
        self.i += 1
        return Repeat(int(count[2:]), self.block("r("))

    def cond_block(self, inside_not: bool = False) -> Cond:
        self.expect("c(")
        tok = self.peek()
        if tok in CONDITIONS:
            self.i += 1
            cond: Cond = Prim(tok)
        elif tok == "not" and not (self.strict and inside_not):
            self.i += 1
            cond = Not(self.cond_block(inside_not=True))
        else:
            expected = "a perception" if inside_not and self.strict else "a perception or 'not'"
            raise self.fail(expected)
        self.expect("c)")
        return cond


def parse(text: str | Sequence[str], *, strict: bool = False) -> Program:
    """Parse program text (or a token list) into a `Program`.

    Args:
        text: e.g. ``"DEF run m( WHILE c( frontIsClear c) w( move w) m)"``.
        strict: the sampler / dataset grammar, where ``not`` only wraps a primitive.

    Raises:
        ParseError: (a `UserError`) naming the token position and what was expected there.
    """
    tokens = tokenize(text) if isinstance(text, str) else list(text)
    for i, tok in enumerate(tokens):
        if tok not in VOCAB:
            raise _unknown_token(tok, i)
    parser = _Parser(tokens, strict)
    try:
        return parser.program()
    except RecursionError:
        raise ParseError(
            f"parse error at token {parser.i}: program nested too deeply to parse",
            parser.i,
            "a shallower program",
        ) from None


def parse_ids(ids: Iterable[int], *, strict: bool = False) -> Program:
    """Parse a token-id sequence (padding id 50 and everything after it dropped)."""
    return parse(ids_to_tokens(ids), strict=strict)


def is_valid(program: str | Sequence[str] | Sequence[int]) -> bool:
    """The validity ("syntax") test of the task rewards.

    Valid = parses (nested ``not`` allowed) and has more than 4 tokens. Accepts text, tokens
    or ids.
    """
    if isinstance(program, str):
        tokens = program.split()
    else:
        seq = list(program)
        if seq and not isinstance(seq[0], str):
            tokens = ids_to_tokens(int(i) for i in seq)
        else:
            tokens = [str(t) for t in seq]
    if len(tokens) <= 4:
        return False
    try:
        parse([str(t) for t in tokens])
    except ParseError:
        return False
    return True


# ---------------------------------------------------------------------------- printer
def _cond_tokens(cond: Cond, out: list[str]) -> None:
    out.append("c(")
    if isinstance(cond, Prim):
        out.append(cond.name)
    else:
        out.append("not")
        _cond_tokens(cond.cond, out)
    out.append("c)")


def _block_tokens(body: tuple[Stmt, ...], open_tok: str, out: list[str]) -> None:
    out.append(open_tok)
    for s in body:
        _stmt_tokens(s, out)
    out.append(_BODY_CLOSE[open_tok])


def _stmt_tokens(s: Stmt, out: list[str]) -> None:
    match s:
        case Action(name):
            out.append(name)
        case While(cond, body):
            out.append("WHILE")
            _cond_tokens(cond, out)
            _block_tokens(body, "w(", out)
        case Repeat(times, body):
            out.extend(("REPEAT", f"R={times}"))
            _block_tokens(body, "r(", out)
        case If(cond, body):
            out.append("IF")
            _cond_tokens(cond, out)
            _block_tokens(body, "i(", out)
        case IfElse(cond, then, orelse):
            out.append("IFELSE")
            _cond_tokens(cond, out)
            _block_tokens(then, "i(", out)
            out.append("ELSE")
            _block_tokens(orelse, "e(", out)


def to_tokens(program: Program) -> list[str]:
    """The token list of a program."""
    out = ["DEF", "run"]
    _block_tokens(program.body, "m(", out)
    return out


def to_text(program: Program) -> str:
    """Canonical one-line text (tokens separated by one space); ``parse(to_text(p)) == p``."""
    return " ".join(to_tokens(program))


def pretty(program: Program, indent: str = "  ") -> str:
    """A multi-line, indented rendering for humans (still valid program text)."""
    lines: list[str] = ["DEF run m("]

    def block(body: tuple[Stmt, ...], depth: int) -> None:
        for s in body:
            pad = indent * depth
            match s:
                case Action(name):
                    lines.append(pad + name)
                case While(cond, b):
                    lines.append(f"{pad}WHILE {cond_text(cond)} w(")
                    block(b, depth + 1)
                    lines.append(pad + "w)")
                case Repeat(times, b):
                    lines.append(f"{pad}REPEAT R={times} r(")
                    block(b, depth + 1)
                    lines.append(pad + "r)")
                case If(cond, b):
                    lines.append(f"{pad}IF {cond_text(cond)} i(")
                    block(b, depth + 1)
                    lines.append(pad + "i)")
                case IfElse(cond, t, e):
                    lines.append(f"{pad}IFELSE {cond_text(cond)} i(")
                    block(t, depth + 1)
                    lines.append(f"{pad}i) ELSE e(")
                    block(e, depth + 1)
                    lines.append(pad + "e)")

    block(program.body, 1)
    lines.append("m)")
    return "\n".join(lines)


def cond_text(cond: Cond) -> str:
    """Text of a condition including its ``c( … c)`` brackets."""
    out: list[str] = []
    _cond_tokens(cond, out)
    return " ".join(out)


def count_tokens(program: Program) -> int:
    """Number of tokens of the program text (``DEF`` included)."""
    return len(to_tokens(program))
