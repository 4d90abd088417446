"""Hand-written autograd pieces for the RIM time loop (internal).

Two tricks cut the per-step autograd cost of a RIM layer on CPU, where it is dominated by
small ops rather than FLOPs:

* **Deferred weight gradients.** A recurrent weight used at every step normally gets one
  small ``h_tᵀ @ grad_t`` product per step (reduction length = batch). `WeightTape` instead
  records the pairs ``(h_t, grad_t)`` during the backward pass and computes the weight
  gradient once, as a single batched product over all ``time · batch`` rows, when every step
  has been differentiated (autograd runs the node that produced the weight alias last).
* **Fused attention among units.** `unit_attention` runs the communication attention
  (scores, softmax, dropout, weighted sum of values) as one autograd node.
* **Fused LSTM update.** `lstm_masked` evaluates the gate nonlinearities, the new cell
  state, the RIM gradient block and the keep-active selection of the cell state as one
  autograd node with a hand-written backward.

Neither supports double backward (``create_graph=True``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["WeightTape", "lstm_masked", "unit_attention"]


class WeightTape:
    """Deferred-gradient handle for one group weight ``(N, d_in, d_out)`` in one forward call.

    Create one per forward pass, multiply with `bmm` (any number of times), and the weight's
    gradient is accumulated in one batched product at the end of the backward pass.

    Args:
        weight: the parameter ``(N, d_in, d_out)``.
    """

    def __init__(self, weight: Tensor) -> None:
        self.inputs: list[Tensor] = []
        self.grads: list[Tensor] = []
        self.weight = weight
        self.alias: Tensor = (
            _Defer.apply(weight, self)
            if torch.is_grad_enabled() and weight.requires_grad
            else weight
        )
        self.node = self.alias.grad_fn if self.alias is not weight else None

    def record(self, x: Tensor, grad: Tensor) -> None:
        """Keep one product's factors, if this backward pass reaches the weight at all.

        A pass that does not (e.g. ``torch.autograd.grad`` for the initial state only) must
        not leave factors behind for a later pass to count.
        """
        if self.node is not None and torch._C._will_engine_execute_node(self.node):
            self.inputs.append(x)
            self.grads.append(grad)

    def bmm(self, x: Tensor, add: Tensor | None = None) -> Tensor:
        """``add + x @ weight`` per unit; x ``(N, B, d_in)``, add ``(N, B, d_out)`` or None."""
        if self.alias is self.weight:
            return torch.bmm(x, self.weight) if add is None else torch.baddbmm(add, x, self.weight)
        if add is None:
            return _TapedBmm.apply(x, self.alias, self)
        return _TapedBaddbmm.apply(add, x, self.alias, self)


class _Defer(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, weight: Tensor, tape: WeightTape) -> Tensor:
        ctx.tape = tape
        ctx.set_materialize_grads(False)
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        grad: Tensor | None = grads[0]
        tape: WeightTape = ctx.tape
        if not tape.inputs:
            return grad, None
        inputs = torch.cat(tape.inputs, dim=1)  # (N, rows, d_in)
        outputs = torch.cat(tape.grads, dim=1)  # (N, rows, d_out)
        tape.inputs.clear()
        tape.grads.clear()
        if grad is None:
            return torch.bmm(inputs.transpose(1, 2), outputs), None
        return torch.baddbmm(grad, inputs.transpose(1, 2), outputs), None


class _TapedBmm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, tape: WeightTape) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.tape = tape
        return torch.bmm(x, weight)

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        grad: Tensor = grads[0]
        x, weight = ctx.saved_tensors
        ctx.tape.record(x, grad)
        dx = torch.bmm(grad, weight.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        return dx, None, None


class _TapedBaddbmm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, add: Tensor, x: Tensor, weight: Tensor, tape: WeightTape) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.tape = tape
        return torch.baddbmm(add, x, weight)

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        grad: Tensor = grads[0]
        x, weight = ctx.saved_tensors
        ctx.tape.record(x, grad)
        dx = torch.bmm(grad, weight.transpose(1, 2)) if ctx.needs_input_grad[1] else None
        return grad, dx, None, None


class _LSTMMasked(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, gates: Tensor, c: Tensor, active: Tensor) -> tuple[Tensor, Tensor]:
        hidden = c.shape[-1]
        ifo, g = gates.split([3 * hidden, hidden], dim=-1)
        sig = torch.sigmoid(ifo)
        i, f, o = sig.chunk(3, dim=-1)
        g = torch.tanh(g)
        c_new = torch.addcmul(f * c, i, g)
        tc = torch.tanh(c_new)
        h_new = o * tc
        c_out = torch.where(active, c_new, c)
        ctx.save_for_backward(sig, g, c, tc, active)
        ctx.set_materialize_grads(False)
        return h_new, c_out

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        dh: Tensor | None = grads[0]
        dc_out: Tensor | None = grads[1]
        sig, g, c, tc, active = ctx.saved_tensors
        i, f, o = sig.chunk(3, dim=-1)
        zero = sig.new_zeros(())
        # gradient block: inactive units' fresh states pass nothing back into the cell
        dc_new = torch.where(active, dc_out, zero) if dc_out is not None else None
        if dh is not None:
            dh = torch.where(active, dh, zero)
            do = dh * tc
            dct = dh * o * (1.0 - tc * tc)
            dc_new = dct if dc_new is None else dct + dc_new
        else:
            do = torch.zeros_like(tc)
        if dc_new is None:
            dc_new = torch.zeros_like(tc)
        d_ifo = torch.cat((dc_new * g, dc_new * c, do), dim=-1) * (sig * (1.0 - sig))
        dg = dc_new * i * (1.0 - g * g)
        dgates = torch.cat((d_ifo, dg), dim=-1)
        dc = dc_new * f
        if dc_out is not None:
            dc = torch.where(active, dc, dc_out)
        return dgates, dc, None


def lstm_masked(gates: Tensor, c: Tensor, active: Tensor) -> tuple[Tensor, Tensor]:
    """Grouped LSTM update with the RIM masking, as one autograd node.

    Args:
        gates: pre-activations ``(N, B, 4H)`` in the layout ``[i | f | o | g]``.
        c: previous cell state ``(N, B, H)``.
        active: bool ``(N, B, 1)``, True for active units.

    Returns:
        ``(h_cell, c_out)``: the fresh hidden state of every unit (its gradient is blocked for
        inactive units) and the cell state to carry on (fresh for active units, ``c``
        unchanged for inactive units), each ``(N, B, H)``.
    """
    h_new, c_out = _LSTMMasked.apply(gates, c, active)
    return h_new, c_out


class _UnitAttention(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, qkv: Tensor, heads: int, d_k: int, d_v: int, keep: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        n, b, _ = qkv.shape
        q, k, v = qkv.transpose(0, 1).split([heads * d_k, heads * d_k, heads * d_v], dim=-1)
        # (B·heads, N, d) copies, so every product below is one plain batched matmul
        q = q.reshape(b, n, heads, d_k).transpose(1, 2).reshape(b * heads, n, d_k)
        k = k.reshape(b, n, heads, d_k).transpose(1, 2).reshape(b * heads, n, d_k)
        v = v.reshape(b, n, heads, d_v).transpose(1, 2).reshape(b * heads, n, d_v)
        scale = 1.0 / math.sqrt(d_k)
        att = torch.softmax(torch.bmm(q, k.transpose(1, 2)).mul_(scale), dim=-1)
        att_d = att if keep is None else att * keep
        out = torch.bmm(att_d, v).view(b, heads, n, d_v).permute(2, 0, 1, 3)
        ctx.save_for_backward(q, k, v, att, att_d, keep)
        ctx.dims = (n, b, heads, scale)
        ctx.mark_non_differentiable(att)
        return out.reshape(n, b, heads * d_v), att.view(b, heads, n, n)

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        d_out: Tensor = grads[0]  # the attention output has no gradient
        q, k, v, att, att_d, keep = ctx.saved_tensors
        n, b, heads, scale = ctx.dims
        d_c = d_out.view(n, b, heads, -1).permute(1, 2, 0, 3).reshape(b * heads, n, -1)
        d_a = torch.bmm(d_c, v.transpose(1, 2))
        d_v = torch.bmm(att_d.transpose(1, 2), d_c)
        if keep is not None:
            d_a = d_a * keep
        d_s = (d_a - (d_a * att).sum(-1, keepdim=True)) * att * scale
        d_q = torch.bmm(d_s, k)
        d_k = torch.bmm(d_s.transpose(1, 2), q)
        parts = [
            t.view(b, heads, n, -1).permute(2, 0, 1, 3).reshape(n, b, -1) for t in (d_q, d_k, d_v)
        ]
        return torch.cat(parts, dim=-1), None, None, None, None


def unit_attention(
    qkv: Tensor, heads: int, d_k: int, d_v: int, keep: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Multi-head softmax attention among units, as one autograd node.

    Args:
        qkv: ``(N, B, heads·(2·d_k + d_v))``, columns ``[queries | keys | values]`` with heads
            contiguous inside each block.
        heads: number of heads.
        d_k: query/key width per head (scores are scaled by ``1/√d_k``).
        d_v: value width per head.
        keep: dropout multipliers ``(B·heads, N, N)`` (0 or ``1/(1−p)``) applied to the
            attention probabilities, or ``None`` for no dropout.

    Returns:
        ``(context, attention)``: context ``(N, B, heads·d_v)`` (heads concatenated) and the
        attention probabilities before dropout ``(B, heads, N query, N key)`` (no gradient).
    """
    context, att = _UnitAttention.apply(qkv, heads, d_k, d_v, keep)
    return context, att
