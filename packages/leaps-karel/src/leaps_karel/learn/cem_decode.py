"""Fast greedy grammar-masked decoding for the stage-2 search (NumPy, float32).

`ProgramVAE.decode_greedy` runs ~20 small torch operations per step for 45 steps; at CEM's
population sizes (16–64 latents) the per-operation overhead dominates. `FastDecoder` computes
the same function with the terms that do not change over the steps precomputed:

* the GRU's input gates split into a per-latent part ``W_ih[:, 51:] z + b_ih`` and a per-token
  table ``W_ih[:, :51] embed(t)``;
* the head's first layer split the same way (``W₁ [out; embed(t); z] + b₁`` = ``W₁ₒ out`` +
  per-token table + per-latent part);
* the grammar automaton of `leaps_karel.learn.grammar` stepped with NumPy on its own tables;
* a program that has emitted its final ``m)`` leaves the computation (the rest is pad).

Float sums are grouped differently from torch's, so an argmax between two logits equal to
~1e-6 can differ; the tests measure the agreement with `ProgramVAE.decode_greedy`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from leaps_karel.learn.grammar import _TABLES, ACT, PAD, STACK, V, ids_to_program

if TYPE_CHECKING:
    import torch

_DEF = V["DEF"]
_C_OPEN, _C_CLOSE, _I_OPEN, _I_CLOSE = V["c("], V["c)"], V["i("], V["i)"]
_IFELSE, _ELSE = V["IFELSE"], V["ELSE"]


class NumpyGrammar:
    """`leaps_karel.learn.grammar.GrammarState` on NumPy arrays (same automaton and tables)."""

    def __init__(self, batch: int) -> None:
        self.t = _TABLES
        self.rows = np.arange(batch)
        self.key = np.full(batch, _DEF, dtype=np.int64)
        self.depth = np.zeros(batch, dtype=np.int64)
        self.body = np.zeros(batch, dtype=np.int64)
        self.pending = np.zeros(batch, dtype=bool)
        self.stack = np.full((batch, STACK), -1, dtype=np.int64)
        self.flags = np.zeros((batch, STACK), dtype=bool)
        self.ptr = np.zeros(batch, dtype=np.int64)

    def allowed(self) -> np.ndarray:
        """``[P, 51]`` bool: tokens allowed next."""
        mask = self.t["allowed"][self.key]
        top = self.stack[self.rows, np.maximum(self.ptr - 1, 0)]
        act = (self.key == ACT) & (self.ptr > 0) & (top >= 0)
        mask[self.rows[act], top[act]] = True
        return mask

    def step(self, tokens: np.ndarray) -> None:
        """Consume one token per program (``[P]`` int64)."""
        t, rows, key = self.t, self.rows, self.key
        closer = t["is_closer"][tokens]
        popped_ptr = np.maximum(self.ptr - 1, 0)
        popped_flag = self.flags[rows, popped_ptr]
        self.ptr = np.where(closer, popped_ptr, self.ptr)
        closes = t["closer_of"][tokens]
        opens = closes >= 0
        if opens.any():
            push_at = np.minimum(self.ptr, STACK - 1)
            self.stack[rows[opens], push_at[opens]] = closes[opens]
            self.flags[rows[opens], push_at[opens]] = self.pending[opens] & (
                tokens[opens] == _I_OPEN
            )
            self.ptr = np.where(opens, np.minimum(self.ptr + 1, STACK), self.ptr)
        body = t["body"][tokens]
        ctrl = (key == ACT) & (body >= 0)
        self.body = np.where(ctrl, body, self.body)
        self.pending = np.where(ctrl, tokens == _IFELSE, self.pending)
        cond_close = tokens == _C_CLOSE
        self.depth = self.depth + (tokens == _C_OPEN) - cond_close
        nxt = t["next"][key, tokens]
        nxt = np.where(cond_close, np.where(self.depth <= 0, self.body, _C_CLOSE), nxt)
        if_close = (key == ACT) & (tokens == _I_CLOSE)
        nxt = np.where(if_close, np.where(popped_flag, _ELSE, ACT), nxt)
        self.key = np.where(nxt < 0, PAD, nxt)


class FastDecoder:
    """Greedy decoding of a `ProgramVAE`'s decoder with precomputed terms.

    Args:
        model: a `leaps_karel.learn.model.ProgramVAE` (its decoder weights are copied).
    """

    def __init__(self, model: Any) -> None:
        import torch

        dec = model.decoder
        with torch.no_grad():

            def arr(t: torch.Tensor) -> np.ndarray:
                return t.detach().float().cpu().numpy().astype(np.float32)

            embed = arr(dec["embed"].weight)  # [51, 51]
            gru = dec["gru"]
            w_ih, w_hh = arr(gru.weight_ih_l0), arr(gru.weight_hh_l0)  # [3H, 51+H], [3H, H]
            b_ih, b_hh = arr(gru.bias_ih_l0), arr(gru.bias_hh_l0)
            lin1, lin2 = dec["head"][0], dec["head"][2]
            w1, b1 = arr(lin1.weight), arr(lin1.bias)  # [H, H+51+H]
            w2, b2 = arr(lin2.weight), arr(lin2.bias)  # [51, H]
        v = embed.shape[0]
        h = w_hh.shape[1]
        self.hidden = h
        self.steps = int(model.cfg.decode_steps)
        self.tok_gates = embed @ w_ih[:, :v].T  # [51, 3H]
        self.z_gates_w = np.ascontiguousarray(w_ih[:, v:].T)  # [H, 3H]
        self.b_ih = b_ih
        self.w_hh_t = np.ascontiguousarray(w_hh.T)  # [H, 3H]
        self.b_hh = b_hh
        self.w1_out_t = np.ascontiguousarray(w1[:, :h].T)  # [H, H]
        self.tok_head = embed @ w1[:, h : h + v].T  # [51, H]
        self.w1_z_t = np.ascontiguousarray(w1[:, h + v :].T)  # [H, H]
        self.b1 = b1
        self.w2_t = np.ascontiguousarray(w2.T)  # [H, 51]
        self.b2 = b2

    def decode_ids(self, z: np.ndarray) -> np.ndarray:
        """``z [P, H]`` → ``[P, 45]`` int64 ids (``run`` first, pad after the end)."""
        z = np.asarray(z, dtype=np.float32)
        p, h = z.shape[0], self.hidden
        z_gates = z @ self.z_gates_w + self.b_ih  # [P, 3H]
        z_head = z @ self.w1_z_t + self.b1  # [P, H]
        hid = z.copy()
        grammar = NumpyGrammar(p)
        tok = np.full(p, _DEF, dtype=np.int64)
        out = np.full((p, self.steps), PAD, dtype=np.int64)
        for step in range(self.steps):
            grammar.step(tok)
            live = np.flatnonzero(grammar.key != PAD)  # finished programs only emit pad
            if live.size == 0:
                break
            full = live.size == p
            t_live = tok if full else tok[live]
            h_live = hid if full else hid[live]
            gi = (z_gates if full else z_gates[live]) + self.tok_gates[t_live]
            gh = h_live @ self.w_hh_t + self.b_hh
            r = 1.0 / (1.0 + np.exp(-(gi[:, :h] + gh[:, :h])))
            u = 1.0 / (1.0 + np.exp(-(gi[:, h : 2 * h] + gh[:, h : 2 * h])))
            n = np.tanh(gi[:, 2 * h :] + r * gh[:, 2 * h :])
            h_live = (1.0 - u) * n + u * h_live
            zh = z_head if full else z_head[live]
            a = np.tanh(h_live @ self.w1_out_t + self.tok_head[t_live] + zh)
            logits = a @ self.w2_t + self.b2
            allowed = grammar.allowed()
            logits[~(allowed if full else allowed[live])] = -np.inf
            if full:
                hid = h_live
                tok = logits.argmax(axis=1)
            else:
                hid[live] = h_live
                tok = np.full(p, PAD, dtype=np.int64)
                tok[live] = logits.argmax(axis=1)
            out[:, step] = tok
        return out

    def __call__(self, z: torch.Tensor | np.ndarray) -> list[str]:
        """``z [P, H]`` → P program texts (``DEF`` + the tokens before the first pad)."""
        zn = z.detach().cpu().numpy() if hasattr(z, "detach") else np.asarray(z)  # type: ignore[union-attr]
        return [ids_to_program(row) for row in self.decode_ids(zn).tolist()]
