"""A fused, masked LSTM pass with a hand-written backward (the model's hot loop).

CompILE runs one LSTM cell M times over the whole padded sequence; after every cell update
both the hidden and the cell state are multiplied by a soft mask ``w[t]``. Run through
autograd op by op, this loop costs dozens of small kernels per time step in the forward
and again in the backward. This module computes the same function with:

* input projections precomputed for all time steps (``x_t W_ih^T + b`` does not depend on
  the recurrence, nor on the segment, so the caller computes it once per forward and
  reuses it for all M passes);
* one sigmoid over all four gates per step (``tanh(x) = 2 sigmoid(2x) - 1``; the caller
  doubles the g-gate rows of the projections and of ``W_hh``, which is exact);
* a backward pass written by hand: per step only the elementwise chain rule and one
  ``(B, 4H) @ (4H, H)`` product; the gradient of ``W_hh`` for all steps is one matrix
  product at the end, and the mask gradient is one vectorised reduction.

Gate order is PyTorch's (input, forget, cell, output), so the weights are those of a
``torch.nn.LSTMCell``. The tests check values and gradients against a plain
``nn.LSTMCell`` loop and with ``torch.autograd.gradcheck`` in float64.
"""

from __future__ import annotations

from typing import Any

import torch


def _forward(
    xs: torch.Tensor, w: torch.Tensor, whh: torch.Tensor, save: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the masked recurrence; returns ``(E, S, C, K)``.

    ``E`` (T, B, H) are the masked hidden states, ``S`` (T, B, 4H) the gate sigmoids,
    ``C`` (T, B, H) the unmasked cell states and ``K`` (T, B, H) ``sigmoid(2 C)``
    (so ``tanh(C) = 2 K - 1``). Without ``save`` the last three are scratch space of a
    single step. No Python-scalar arithmetic happens inside the loop (each one would cost a
    tensor conversion); ``2 a b - a`` forms use ``addcmul``'s ``value`` argument.
    """
    steps, batch, gates = xs.shape
    hidden = gates // 4
    out = xs.new_empty(steps, batch, hidden)
    keep = steps if save else 1
    s_all = xs.new_empty(keep, batch, gates)
    c_all = xs.new_empty(keep, batch, hidden)
    k_all = xs.new_empty(keep, batch, hidden)
    w3 = w.unsqueeze(2)
    whh_t = whh.t().contiguous()
    h: torch.Tensor | None = None
    c: torch.Tensor | None = None
    for t in range(steps):
        slot = t if save else 0
        s = s_all[slot]
        if h is None:
            torch.sigmoid(xs[t], out=s)
        else:
            torch.sigmoid(torch.addmm(xs[t], h, whh_t), out=s)
        i, f, g2, o = s.split(hidden, dim=1)
        # c~ = i * tanh(z_g) + f * c with tanh(z_g) = 2 g2 - 1, i.e. 2 i g2 - i + f c.
        c_new = torch.addcmul(i.neg(), i, g2, value=2.0, out=c_all[slot])
        if c is not None:
            c_new.addcmul_(f, c)
        k = torch.add(c_new, c_new, out=k_all[slot]).sigmoid_()
        # h~ = o * tanh(c~) = 2 o k - o; then the mask.
        h = torch.mul(torch.addcmul(o.neg(), o, k, value=2.0), w3[t], out=out[t])
        c = c_new * w3[t]
    return out, s_all, c_all, k_all


class _MaskedLSTM(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, xs: torch.Tensor, w: torch.Tensor, whh: torch.Tensor) -> torch.Tensor:
        save = any(ctx.needs_input_grad)
        out, s_all, c_all, k_all = _forward(xs, w, whh, save)
        if save:
            ctx.save_for_backward(w, whh, out, s_all, c_all, k_all)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        w, whh, out, s_all, c_all, k_all = ctx.saved_tensors
        steps, batch, gates = s_all.shape
        hidden = gates // 4
        grad_out = grad_out.contiguous()
        i_all, f_all, g2_all, o_all = s_all.split(hidden, dim=2)
        u_all = k_all * 2.0 - 1.0  # tanh(c~)
        w3 = w.unsqueeze(2)
        # d s / d z' for every gate block; the cell gate is read as g = 2 s - 1, so its
        # derivative with respect to the (doubled) pre-activation carries a factor 2.
        ds_all = s_all * (1.0 - s_all)
        ds_all[:, :, 2 * hidden : 3 * hidden].mul_(2.0)
        # Per-step factors, vectorised over time: dz[:, :3H] = dc~ * q[t], dz[:, 3H:] = dh~ * r[t].
        c_prev = torch.zeros_like(c_all)
        torch.mul(c_all[:-1], w3[:-1], out=c_prev[1:])  # the masked c_{t-1}
        q_all = torch.cat([g2_all * 2.0 - 1.0, c_prev, i_all], dim=2)
        q_all.mul_(ds_all[:, :, : 3 * hidden])
        q_all = q_all.view(steps, batch, 3, hidden)
        r_all = u_all * ds_all[:, :, 3 * hidden :]
        a_all = o_all * (1.0 - u_all * u_all)  # d h~ / d c~
        dz_all = torch.empty_like(s_all)
        dh_all = torch.empty_like(out)  # total gradient of the masked h_t
        dc_all = torch.zeros_like(out)  # total gradient of the masked c_t
        dh_rec = torch.zeros_like(out)  # gradient reaching h_t through step t + 1
        for t in range(steps - 1, -1, -1):
            dh = torch.add(grad_out[t], dh_rec[t], out=dh_all[t])
            dht = dh * w3[t]
            dct = torch.mul(dc_all[t], w3[t]).addcmul_(dht, a_all[t])
            dz = dz_all[t]
            torch.mul(dct.unsqueeze(1), q_all[t], out=dz[:, : 3 * hidden].view(batch, 3, hidden))
            torch.mul(dht, r_all[t], out=dz[:, 3 * hidden :])
            if t > 0:
                torch.mm(dz, whh, out=dh_rec[t - 1])
                torch.mul(dct, f_all[t], out=dc_all[t - 1])
        grad_xs = dz_all if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            h_tilde = o_all * u_all
            grad_w = (dh_all * h_tilde).sum(2) + (dc_all * c_all).sum(2)
        grad_whh = None
        if ctx.needs_input_grad[2]:
            grad_whh = dz_all[1:].reshape(-1, gates).t() @ out[:-1].reshape(-1, hidden)
        return grad_xs, grad_w, grad_whh


def masked_lstm(xs: torch.Tensor, w: torch.Tensor, whh: torch.Tensor) -> torch.Tensor:
    """One masked LSTM pass from a zero state, with a fused backward.

    The recurrence, for t = 0..T-1 with ``(h, c) = (0, 0)`` before t = 0::

        s = sigmoid(xs[t] + h @ whh.T)            # i, f, g', o blocks of width H
        c~ = f * c + i * (2 g' - 1)                # 2 g' - 1 = tanh of the true cell gate
        h~ = o * tanh(c~)
        h, c = w[t] * h~, w[t] * c~                # the mask wipes (or scales) the state

    Args:
        xs: ``(T, B, 4H)`` input projections ``x_t W_ih^T + b_ih + b_hh`` with the cell-gate
            block (columns 2H..3H) multiplied by 2.
        w: ``(T, B)`` mask in [0, 1].
        whh: ``(4H, H)`` recurrent weight with the cell-gate rows multiplied by 2.

    Returns:
        ``(T, B, H)`` masked hidden states ``h_t``.
    """
    if xs.dim() != 3 or w.shape != xs.shape[:2] or whh.shape != (xs.shape[2], xs.shape[2] // 4):
        raise ValueError(
            f"masked_lstm: shapes xs {tuple(xs.shape)}, w {tuple(w.shape)}, "
            f"whh {tuple(whh.shape)} do not fit (T, B, 4H), (T, B), (4H, H)"
        )
    return _MaskedLSTM.apply(xs, w, whh)  # type: ignore[no-any-return]
