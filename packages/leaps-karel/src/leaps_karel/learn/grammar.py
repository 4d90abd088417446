"""The decoder's grammar mask (spec §2): a pushdown automaton, vectorised over a batch.

The automaton consumes the decoder's *input* token at every step and gives the set of tokens
allowed *next*. Its state per program is a handful of integers (mode key, condition depth,
body opener, pending "IFELSE needs ELSE" flag, stack pointer) plus a fixed-size stack of
expected closers with their need-else flags, all held as torch tensors, so one step of a
``[P]`` batch is a few tensor operations regardless of P.

Mode keys: ``0..50`` = MANDATORY(token id) (POSTCOND(opener) is MANDATORY(opener): it accepts
only the opener and then goes to ACT, exactly like MANDATORY of an opening bracket);
``51`` = ACT, ``52`` = CSTE (a repeat count), ``53`` = BOOL (a perception or ``not``).

Quirks kept from the original (spec §2): empty blocks (``m( m)``, ``w( w)``) and nested ``not``
are allowed, and the automaton does not know the 45-token limit, so a decoded program can be
cut off before ``m)``. Token ids are the engine's (`leaps_karel.dsl.VOCAB`), pad = 50.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from leaps_karel import dsl

if TYPE_CHECKING:
    import torch

__all__ = [
    "ACT",
    "BOOL",
    "CSTE",
    "NUM_KEYS",
    "VOCAB_SIZE",
    "GrammarState",
    "accepts",
    "check_ids",
    "fill_empty_blocks",
    "ids_to_program",
    "teacher_masks",
]

V = dsl.VOCAB
PAD = dsl.PAD_ID
VOCAB_SIZE = dsl.NUM_TOKENS + 1  # 51: 50 DSL tokens + pad
ACT, CSTE, BOOL = 51, 52, 53
NUM_KEYS = 54
#: Stack capacity: a 46-token input can open at most 23 brackets.
STACK = 48

_OPEN_CLOSE = {"m(": "m)", "w(": "w)", "r(": "r)", "i(": "i)", "e(": "e)", "c(": "c)"}
_ACTIONS = [V[a] for a in dsl.ACTIONS]
_PERCEPTIONS = [V[c] for c in dsl.CONDITIONS]
_REPEATS = [V[f"R={k}"] for k in range(dsl.MAX_REPEAT + 1)]


def _tables() -> dict[str, np.ndarray]:
    """Static lookup tables of the automaton (NumPy; turned into tensors per device)."""
    allowed = np.zeros((NUM_KEYS, VOCAB_SIZE), dtype=bool)
    for tok in range(VOCAB_SIZE):
        allowed[tok, tok] = True  # MANDATORY(x) -> {x}
    allowed[ACT, [*_ACTIONS, V["REPEAT"], V["WHILE"], V["IF"], V["IFELSE"]]] = True
    allowed[CSTE, _REPEATS] = True
    allowed[BOOL, [*_PERCEPTIONS, V["not"]]] = True
    # Next key for the "plain" transitions; -1 = special (c), i)), resolved at run time.
    nxt = np.full((NUM_KEYS, VOCAB_SIZE), -1, dtype=np.int64)
    mand = {
        "DEF": V["run"],
        "run": V["m("],
        "ELSE": V["e("],
        "c(": BOOL,
        "m(": ACT,
        "w(": ACT,
        "r(": ACT,
        "i(": ACT,
        "e(": ACT,
    }
    for tok, key in mand.items():
        nxt[V[tok], V[tok]] = key
    nxt[PAD, PAD] = PAD
    for a in _ACTIONS:
        nxt[ACT, a] = ACT
    nxt[ACT, V["WHILE"]] = nxt[ACT, V["IF"]] = nxt[ACT, V["IFELSE"]] = V["c("]
    nxt[ACT, V["REPEAT"]] = CSTE
    nxt[ACT, V["m)"]] = PAD
    for closer in ("w)", "r)", "e)"):
        nxt[ACT, V[closer]] = ACT
    for r in _REPEATS:
        nxt[CSTE, r] = V["r("]
    for p in _PERCEPTIONS:
        nxt[BOOL, p] = V["c)"]
    nxt[BOOL, V["not"]] = V["c("]
    closer_of = np.full(VOCAB_SIZE, -1, dtype=np.int64)
    is_closer = np.zeros(VOCAB_SIZE, dtype=bool)
    for o, c in _OPEN_CLOSE.items():
        closer_of[V[o]] = V[c]
        is_closer[V[c]] = True
    body = np.full(VOCAB_SIZE, -1, dtype=np.int64)
    body[V["WHILE"]] = V["w("]
    body[V["IF"]] = body[V["IFELSE"]] = V["i("]
    return {"allowed": allowed, "next": nxt, "closer_of": closer_of, "is_closer": is_closer,
            "body": body}  # fmt: skip


_TABLES = _tables()
_DEVICE_TABLES: dict[str, dict[str, torch.Tensor]] = {}


def _device_tables(device: torch.device) -> dict[str, torch.Tensor]:
    import torch

    key = str(device)
    if key not in _DEVICE_TABLES:
        _DEVICE_TABLES[key] = {k: torch.as_tensor(v, device=device) for k, v in _TABLES.items()}
    return _DEVICE_TABLES[key]


class GrammarState:
    """Automaton state of P programs; `step` consumes one token each, `allowed` gives the mask.

    Args:
        batch: P.
        device: where the state tensors live.

    Attributes:
        key: ``[P]`` long mode key (see the module docstring).
        ok: ``[P]`` bool: every consumed token was allowed so far.
    """

    def __init__(self, batch: int, device: torch.device | str = "cpu") -> None:
        import torch

        self.device = torch.device(device)
        self.t = _device_tables(self.device)
        self.rows = torch.arange(batch, device=self.device)
        self.key = torch.full((batch,), V["DEF"], dtype=torch.long, device=self.device)
        self.depth = torch.zeros(batch, dtype=torch.long, device=self.device)
        self.body = torch.zeros(batch, dtype=torch.long, device=self.device)
        self.pending = torch.zeros(batch, dtype=torch.bool, device=self.device)
        self.stack = torch.full((batch, STACK), -1, dtype=torch.long, device=self.device)
        self.flags = torch.zeros((batch, STACK), dtype=torch.bool, device=self.device)
        self.ptr = torch.zeros(batch, dtype=torch.long, device=self.device)
        self.ok = torch.ones(batch, dtype=torch.bool, device=self.device)

    def allowed(self) -> torch.Tensor:
        """``[P, 51]`` bool: the tokens allowed next (the decoder's output at this step)."""
        import torch

        mask = self.t["allowed"][self.key].clone()
        top = self.stack[self.rows, (self.ptr - 1).clamp(min=0)]
        act = (self.key == ACT) & (self.ptr > 0) & (top >= 0)
        mask[self.rows[act], top[act]] = True
        return mask if mask.dtype == torch.bool else mask.bool()

    def step(self, tokens: torch.Tensor) -> None:
        """Consume one token per program (``[P]`` long; the decoder's next input)."""
        import torch

        t = self.t
        tokens = tokens.to(self.device, torch.long)
        rows = self.rows
        self.ok = self.ok & self.allowed()[rows, tokens]
        key = self.key
        # Bracket stack: closers pop, openers push their closer (with the pending ELSE flag).
        closer = t["is_closer"][tokens]
        popped_ptr = (self.ptr - 1).clamp(min=0)
        popped_flag = self.flags[rows, popped_ptr]
        self.ptr = torch.where(closer, popped_ptr, self.ptr)
        opens = t["closer_of"][tokens] >= 0
        push_at = self.ptr.clamp(max=STACK - 1)
        self.stack[rows[opens], push_at[opens]] = t["closer_of"][tokens[opens]]
        is_i_open = tokens == V["i("]
        self.flags[rows[opens], push_at[opens]] = self.pending[opens] & is_i_open[opens]
        self.ptr = torch.where(opens, (self.ptr + 1).clamp(max=STACK), self.ptr)
        # Control statements remember their body opener and whether they need an ELSE.
        ctrl = (key == ACT) & (t["body"][tokens] >= 0)
        self.body = torch.where(ctrl, t["body"][tokens], self.body)
        self.pending = torch.where(ctrl, tokens == V["IFELSE"], self.pending)
        # Condition depth and the next mode.
        self.depth = self.depth + (tokens == V["c("]).long() - (tokens == V["c)"]).long()
        nxt = t["next"][key, tokens]
        cond_close = tokens == V["c)"]
        nxt = torch.where(
            cond_close, torch.where(self.depth <= 0, self.body, torch.full_like(nxt, V["c)"])), nxt
        )
        if_close = (key == ACT) & (tokens == V["i)"])
        nxt = torch.where(if_close, torch.where(popped_flag, V["ELSE"], ACT), nxt)
        # Tokens the mask forbids leave the state unusable; park it on pad (checked via `ok`).
        self.key = torch.where(nxt < 0, torch.full_like(nxt, PAD), nxt)

    def finished(self) -> torch.Tensor:
        """``[P]`` bool: ``m)`` has been consumed (the automaton waits for pad)."""
        return self.key == PAD


def teacher_masks(ids: torch.Tensor) -> torch.Tensor:
    """Grammar masks of teacher-forced decoding.

    Args:
        ids: ``[B, T + 1]`` long programs (``DEF`` first, padded with 50).

    Returns:
        ``[B, T, 51]`` bool: row t = tokens allowed at output position t (after input t).
    """
    import torch

    state = GrammarState(ids.shape[0], ids.device)
    out = []
    for t in range(ids.shape[1] - 1):
        state.step(ids[:, t])
        out.append(state.allowed())
    return torch.stack(out, dim=1)


def accepts(ids: torch.Tensor) -> torch.Tensor:
    """Whether the automaton accepts each row (every token allowed at its position).

    Args:
        ids: ``[P, L]`` long, ``DEF`` first; rows need not be complete programs (a prefix of an
            accepted program is accepted) and may be padded with 50 after ``m)``.

    Returns:
        ``[P]`` bool.
    """
    state = GrammarState(ids.shape[0], ids.device)
    for t in range(ids.shape[1]):
        state.step(ids[:, t])
    return state.ok


def check_ids(ids: Sequence[int]) -> bool:
    """Whether the automaton accepts one id sequence (see `accepts`)."""
    import torch

    return bool(accepts(torch.tensor([[int(t) for t in ids]], dtype=torch.long))[0])


def ids_to_program(ids: Sequence[int]) -> str:
    """Program text of decoder output: ``"DEF "`` + the tokens before the first pad (50).

    Args:
        ids: decoded token ids (``run`` first, as `ProgramVAE.decode_greedy` returns them).
    """
    return " ".join(["DEF", *dsl.ids_to_tokens(int(i) for i in ids)])


def fill_empty_blocks(text: str, filler: str = "move") -> str:
    """``text`` with ``filler`` put into every empty block (``w( w)`` → ``w( move w)``).

    The mask allows empty blocks (a quirk of the original); the engine's parser does not. This
    is how the tests relate the two grammars.
    """
    tokens = text.split()
    out: list[str] = []
    for i, tok in enumerate(tokens):
        out.append(tok)
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok in _OPEN_CLOSE and tok != "c(" and nxt == _OPEN_CLOSE[tok]:
            out.append(filler)
    return " ".join(out)
