"""RIMCell: one layer of Recurrent Independent Mechanisms (Goyal et al., 2019).

A RIM layer holds N small recurrent units (LSTM or GRU cells with separate weights). At
each step every unit attends, with a query computed from its own hidden state, over the
real input and a null (all-zero) input; k units become *active*; all units run their cell
(inactive units on a zero input); the new states talk to each other through multi-head
attention; only active units keep their update — inactive units return their previous
``h`` and ``c`` bit-for-bit, and no gradient reaches the inactive units' new states.

Speed: the input-side projections (input keys and values, and the cell's input→gate
weights applied to the attended value) depend only on ``x_t``, so for a whole sequence
they are computed with a few large matrix products *before* the time loop. This is exact
algebra (the attended value is a convex mix of the real and the null value, and the
cell's input map is linear); only floating-point rounding differs from a literal
step-by-step evaluation. The time loop then runs a handful of batched ops per step; for
LSTM units on CPU in float32 it runs in C instead (``_native.py`` / ``rim_lstm.c``: one
forward and one backward call per sequence, same results up to float rounding; see
:func:`rim_cells.set_backend`). Stepping the cell by hand (``forward``, a Python loop like
``nn.LSTMCell``'s) makes one such call per step each way; the parameter-derived weights are
then shared by the steps of a loop and their gradients summed in place, so a step costs
little more than its kernel calls (``_native.prepare_weights``).
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from rim_cells import _native
from rim_cells._fused import WeightTape, lstm_masked, unit_attention
from rim_cells.group import GroupGRUCell, GroupLinear, GroupLSTMCell

__all__ = ["ActivationRule", "RIMCell", "RIMStepInfo"]

ActivationRule = Literal["null_attention", "raw_score"]
"""How the k active units are chosen.

* ``"null_attention"`` (default; the paper and its authors' code): keep the k units that put
  the *least* softmax attention on the null input. Ranked by the score difference
  ``s_real − s_null``, which orders units exactly like the null-attention probability but
  without ties from a saturated softmax.
* ``"raw_score"`` (the community implementation, ``dido1998``): keep the k units with the
  largest raw (pre-softmax) score on the real input. Because the null slot's score differs
  per unit, this picks a different active set in a sizeable fraction of rows.

Ties are broken towards the lower unit index.
"""


class RIMStepInfo(NamedTuple):
    """What a RIM layer did, for inspection and plotting (all tensors detached).

    Leading axes are ``(batch,)`` for a single step and ``(time, batch)`` for a sequence.

    Attributes:
        mask: ``(..., num_units)`` bool, True where the unit was active.
        input_attention: ``(..., num_units)`` softmax attention of each unit on the *real*
            input (1 − attention on the null input), before dropout.
        comm_attention: ``(..., num_comm_heads, num_units, num_units)`` communication
            attention (query unit × key unit), before dropout; rows of inactive query units
            are zero.
    """

    mask: Tensor
    input_attention: Tensor
    comm_attention: Tensor


class _InputSide(NamedTuple):
    """Input-side tensors for one forward call, unit-major."""

    score: Tensor  # (N, T, B, H): s_real - s_null = <h, score[:, t]>
    null_score: Tensor  # (N, 1, H): s_null = <h, null_score>
    rows: Tensor  # (T, B, R): per-step cell-input rows, x (R = I) or x W_val^T (R = d_v)
    x_gates: Tensor  # (N, R + 1, G): [rows -> value map; value bias] @ cell W_ih


class _Tapes(NamedTuple):
    """Deferred-gradient handles of the recurrent weights for one forward call."""

    cell: WeightTape  # LSTM: [read input, h] -> gates; GRU: read input -> gates
    hidden: WeightTape | None  # GRU: h -> gates
    qkv: WeightTape  # communication query/key/value
    out: WeightTape  # communication output


def _gru_step(gx: Tensor, h: Tensor, gh: Tensor) -> Tensor:
    """GRU update from the input and hidden pre-activations, all ``(N, B, ·)``."""
    hidden = h.shape[-1]
    gx_rz, gx_n = gx.split([2 * hidden, hidden], dim=-1)
    gh_rz, gh_n = gh.split([2 * hidden, hidden], dim=-1)
    r, z = torch.sigmoid(gx_rz + gh_rz).chunk(2, dim=-1)
    n = torch.tanh(torch.addcmul(gx_n, r, gh_n))
    return torch.lerp(n, h, z)


class RIMCell(nn.Module):
    """One RIM layer, stepped like ``nn.LSTMCell`` (or run over a whole sequence).

    The positional signature is the original implementation's, so
    ``RIMCell(torch.device("cpu"), 32, 64, 6, 4, "LSTM")`` works unchanged.

    Args:
        device: where to create the parameters (``None``, a string or a ``torch.device``).
            Only a convenience: ``module.to(...)`` moves everything later, and the cell never
            creates tensors on a stored device.
        input_size: input features I.
        hidden_size: hidden features per unit H.
        num_units: number of units N (the paper's K_t).
        k: number of active units per step (the paper's K_a), ``1 <= k <= num_units``.
        rnn_cell: ``"LSTM"`` or ``"GRU"``.
        input_key_size: per-head key/query width of the input attention (d_k).
        input_value_size: width of the value read from the input (d_v), the cells' input.
        input_query_size: must equal ``input_key_size`` (kept for signature parity).
        num_input_heads: input-attention heads; scores and values are averaged over heads.
        input_dropout: dropout on the input-attention probabilities.
        comm_key_size: per-head key/query width of the communication attention.
        comm_value_size: per-head value width of the communication attention. ``None``
            (default) means ``hidden_size``, which is what the original always used (it
            ignored this argument); an explicit value is honoured.
        comm_query_size: must equal ``comm_key_size`` (kept for signature parity).
        num_comm_heads: communication-attention heads.
        comm_dropout: dropout on the communication-attention probabilities.
        activation: ``"null_attention"`` (paper) or ``"raw_score"`` (community repo); see
            `ActivationRule`.
        gru_init: ``"uniform"`` or ``"ones"`` (the original's GRU initialisation bug; parity
            only).

    Note:
        The bias of ``input_key`` adds the same term ``q·b`` to the real and the null score,
        which the two-slot softmax cancels: it never receives a gradient (in the original
        either) and only influences the ``"raw_score"`` activation rule's ranking.

    Shapes (step, :meth:`forward`):
        ``x``: ``(batch, 1, input_size)`` or ``(batch, input_size)``; ``hs``, ``cs``:
        ``(batch, num_units, hidden_size)``. Returns ``(hs, cs)`` (``cs`` is ``None`` for GRU),
        plus a `RIMStepInfo` when ``return_info=True``.
    """

    def __init__(
        self,
        device: torch.device | str | None,
        input_size: int,
        hidden_size: int,
        num_units: int,
        k: int,
        rnn_cell: Literal["LSTM", "GRU"] = "LSTM",
        input_key_size: int = 64,
        input_value_size: int = 400,
        input_query_size: int = 64,
        num_input_heads: int = 1,
        input_dropout: float = 0.1,
        comm_key_size: int = 32,
        comm_value_size: int | None = None,
        comm_query_size: int = 32,
        num_comm_heads: int = 4,
        comm_dropout: float = 0.1,
        *,
        activation: ActivationRule = "null_attention",
        gru_init: Literal["uniform", "ones"] = "uniform",
    ) -> None:
        super().__init__()
        if rnn_cell not in ("LSTM", "GRU"):
            raise ValueError(f"RIMCell: rnn_cell must be 'LSTM' or 'GRU', got {rnn_cell!r}")
        if not 1 <= k <= num_units:
            raise ValueError(f"RIMCell: need 1 <= k <= num_units, got k={k}, N={num_units}")
        if input_query_size != input_key_size:
            raise ValueError(
                f"RIMCell: input_query_size ({input_query_size}) must equal input_key_size "
                f"({input_key_size}); queries and keys are dotted together"
            )
        if comm_query_size != comm_key_size:
            raise ValueError(
                f"RIMCell: comm_query_size ({comm_query_size}) must equal comm_key_size "
                f"({comm_key_size}); queries and keys are dotted together"
            )
        if activation not in ("null_attention", "raw_score"):
            raise ValueError(
                f"RIMCell: activation must be 'null_attention' or 'raw_score', got {activation!r}"
            )
        for name, p in (("input_dropout", input_dropout), ("comm_dropout", comm_dropout)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"RIMCell: {name} must be in [0, 1), got {p}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_units = num_units
        self.k = k
        self.rnn_cell = rnn_cell
        self.input_key_size = input_key_size
        self.input_value_size = input_value_size
        self.num_input_heads = num_input_heads
        self.comm_key_size = comm_key_size
        self.comm_value_size = hidden_size if comm_value_size is None else comm_value_size
        self.num_comm_heads = num_comm_heads
        self.activation: ActivationRule = activation

        self.input_key = nn.Linear(input_size, num_input_heads * input_key_size)
        self.input_value = nn.Linear(input_size, num_input_heads * input_value_size)
        self.input_query = GroupLinear(hidden_size, num_input_heads * input_key_size, num_units)
        self.input_dropout = nn.Dropout(input_dropout)
        self.cell: GroupLSTMCell | GroupGRUCell
        if rnn_cell == "LSTM":
            self.cell = GroupLSTMCell(input_value_size, hidden_size, num_units)
        else:
            self.cell = GroupGRUCell(input_value_size, hidden_size, num_units, init=gru_init)
        qkv = num_comm_heads * (2 * comm_key_size + self.comm_value_size)
        # Communication query, key and value projections stored as one group weight
        # (columns: [queries | keys | values], heads contiguous inside each block).
        self.comm_qkv = GroupLinear(hidden_size, qkv, num_units)
        self.comm_out = GroupLinear(num_comm_heads * self.comm_value_size, hidden_size, num_units)
        self.comm_dropout = nn.Dropout(comm_dropout)
        if device is not None:
            self.to(device)

    # ------------------------------------------------------------------ public API

    @property
    def is_lstm(self) -> bool:
        """True for LSTM units (which carry a cell state), False for GRU units."""
        return self.rnn_cell == "LSTM"

    def initial_state(
        self, batch_size: int, *, like: Tensor | None = None, random: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Zero (or standard-normal, ``random=True``) states ``(h, c)``, ``(batch, N, H)``.

        ``c`` is ``None`` for GRU units. Tensors are created on the device and with the
        dtype of ``like`` (default: this module's parameters).
        """
        ref = like if like is not None else self.input_key.weight
        shape = (batch_size, self.num_units, self.hidden_size)
        make = torch.randn if random else torch.zeros
        h = make(shape, device=ref.device, dtype=ref.dtype)
        c = make(shape, device=ref.device, dtype=ref.dtype) if self.is_lstm else None
        return h, c

    def forward(
        self,
        x: Tensor,
        hs: Tensor | None = None,
        cs: Tensor | None = None,
        *,
        return_info: bool = False,
    ) -> tuple[Tensor, Tensor | None] | tuple[Tensor, Tensor | None, RIMStepInfo]:
        if x.dim() == 3:
            if x.shape[1] != 1:
                raise ValueError(
                    f"RIMCell: x must be (batch, 1, {self.input_size}) for one step, got "
                    f"{tuple(x.shape)}; use forward_sequence (or RIM) for whole sequences"
                )
            x = x[:, 0]
        if (
            self.is_lstm
            and x.dim() == 2
            and x.shape[-1] == self.input_size
            and _native.active_backend(self, x) == "native"
        ):
            return self._forward_native_step(x, hs, cs, return_info)
        out, h, c, info = self.forward_sequence(x.unsqueeze(0), hs, cs, return_info=return_info)
        del out
        if return_info:
            assert info is not None
            step = RIMStepInfo(info.mask[0], info.input_attention[0], info.comm_attention[0])
            return h, c, step
        return h, c

    def forward_sequence(
        self,
        x: Tensor,
        hs: Tensor | None = None,
        cs: Tensor | None = None,
        *,
        reverse: bool = False,
        return_info: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor | None, RIMStepInfo | None]:
        """Run the cell over a whole sequence (the fast path used by ``RIM``).

        Args:
            x: ``(time, batch, input_size)``.
            hs: initial hidden state ``(batch, num_units, hidden_size)``; ``None`` = zeros.
            cs: initial cell state (LSTM only), same shape; ``None`` = zeros.
            reverse: process time steps from last to first (outputs stay in
                chronological order), as the backward direction of a bidirectional RIM.
            return_info: also return a `RIMStepInfo` with a
                leading time axis (chronological order).

        Returns:
            ``(outputs, h, c, info)``: ``outputs`` ``(time, batch, num_units, hidden_size)``
            holds the hidden state after each step; ``h``/``c`` are the final states
            (``c`` is ``None`` for GRU); ``info`` is ``None`` unless requested.
        """
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"RIMCell: x must be (time, batch, {self.input_size}), got {tuple(x.shape)}"
            )
        steps, batch = x.shape[0], x.shape[1]
        if steps == 0:
            raise ValueError("RIMCell: the sequence is empty (time = 0)")
        h0, c0 = self._check_state(hs, cs, batch, x)
        side = self._input_side(x)
        keeps = self._dropout_masks(steps, batch, x)
        if c0 is not None and _native.active_backend(self, x) == "native":
            return self._forward_native(side, h0, c0, keeps, reverse, return_info)
        in_keep, comm_keep = keeps
        # unbind once: indexing gates in the loop would make autograd allocate and
        # zero-fill a full-sequence gradient buffer for every step.
        scores, inputs = side.score.unbind(1), side.rows.unbind(0)
        if self.is_lstm:  # one product per step: [read input, h] @ [x_gates; W_hh]
            cell_tape = WeightTape(torch.cat((side.x_gates, self.cell.weight_hh), dim=1))
            hidden_tape = None
        else:  # GRU needs the input and hidden pre-activations apart
            cell_tape, hidden_tape = WeightTape(side.x_gates), WeightTape(self.cell.weight_hh)
        tapes = _Tapes(
            cell_tape,
            hidden_tape,
            WeightTape(self.comm_qkv.weight),
            WeightTape(self.comm_out.weight),
        )

        h = h0.transpose(0, 1)  # unit-major (N, B, H)
        c = c0.transpose(0, 1) if c0 is not None else None
        order = range(steps - 1, -1, -1) if reverse else range(steps)
        outs: list[Tensor] = [h] * steps
        masks: list[Tensor] = [h] * steps
        in_att: list[Tensor] = [h] * steps
        comm_att: list[Tensor] = [h] * steps
        for t in order:
            keep_t = (
                in_keep[t] if in_keep is not None else None,
                comm_keep[t] if comm_keep is not None else None,
            )
            h, c, step_info = self._step(
                scores[t], inputs[t], side, tapes, h, c, keep_t, return_info
            )
            outs[t] = h
            if step_info is not None:
                masks[t], in_att[t], comm_att[t] = step_info
        outputs = torch.stack(outs).transpose(1, 2)  # (T, B, N, H)
        info = None
        if return_info:
            info = RIMStepInfo(
                torch.stack(masks).transpose(1, 2),
                torch.stack(in_att).transpose(1, 2),
                torch.stack(comm_att),
            )
        h_final = h.transpose(0, 1)
        c_final = c.transpose(0, 1) if c is not None else None
        return outputs, h_final, c_final, info

    # ------------------------------------------------------------------ internals

    def _dropout_masks(
        self, steps: int, batch: int, like: Tensor
    ) -> tuple[Tensor | None, Tensor | None]:
        """Dropout multipliers (0 or ``1/(1-p)``) for a whole sequence, drawn once each.

        Returns ``(input, communication)``: ``(T, 2, N, B)`` for the input-attention
        probabilities [real, null] and ``(T, B·heads, N, N)`` for the communication
        attention; ``None`` in eval mode or when the rate is 0.
        """
        n, heads = self.num_units, self.num_comm_heads
        in_keep = comm_keep = None
        if self.training and self.input_dropout.p > 0:
            in_keep = self.input_dropout(like.new_ones(steps, 2, n, batch))
        if self.training and self.comm_dropout.p > 0:
            comm_keep = self.comm_dropout(like.new_ones(steps, batch * heads, n, n))
        return in_keep, comm_keep

    def _forward_native(
        self,
        side: _InputSide,
        h0: Tensor,
        c0: Tensor,
        keeps: tuple[Tensor | None, Tensor | None],
        reverse: bool,
        return_info: bool,
    ) -> tuple[Tensor, Tensor, Tensor | None, RIMStepInfo | None]:
        """`forward_sequence` with the native kernels (LSTM units, CPU float32)."""
        out, h, c, active, p_real, att = _native.rim_lstm_sequence(
            self,
            side.score,
            side.null_score,
            side.rows,
            side.x_gates,
            h0.transpose(0, 1),
            c0.transpose(0, 1),
            keeps,
            reverse,
        )
        info = None
        if return_info:
            mask = active.transpose(1, 2) > 0  # (T, B, N)
            info = RIMStepInfo(mask, p_real.transpose(1, 2), att * mask[:, :, None, :, None])
        return out.transpose(1, 2), h.transpose(0, 1), c.transpose(0, 1), info

    def _check_state(
        self, hs: Tensor | None, cs: Tensor | None, batch: int, x: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        zeros_h, zeros_c = (None, None)
        if hs is None or (self.is_lstm and cs is None):
            zeros_h, zeros_c = self.initial_state(batch, like=x)
        shape = (batch, self.num_units, self.hidden_size)
        h = hs if hs is not None else zeros_h
        assert h is not None
        if tuple(h.shape) != shape:
            raise ValueError(f"RIMCell: hs must be {shape} (batch, N, H), got {tuple(h.shape)}")
        c: Tensor | None = None
        if self.is_lstm:
            c = cs if cs is not None else zeros_c
            assert c is not None
            if tuple(c.shape) != shape:
                raise ValueError(f"RIMCell: cs must be {shape} (batch, N, H), got {tuple(c.shape)}")
        elif cs is not None:
            raise ValueError("RIMCell: cs was given but rnn_cell is 'GRU' (no cell state)")
        return h, c

    def _per_unit(self, shared: Tensor, weight: Tensor) -> Tensor:
        """``(rows, d) @ weight[n]`` for every unit → ``(N, rows, out)``; no weight copies."""
        return torch.bmm(shared.unsqueeze(0).expand(self.num_units, *shared.shape), weight)

    def _input_weights(
        self,
        count: int,
        query_weight: Tensor,
        key_bias: Tensor,
        value_weight: Tensor,
        value_bias: Tensor,
        weight_ih: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """The parameter-only part of `_input_side` for ``count`` input rows.

        Returns ``(wq_t, null_score, w_val, x_gates)``: the scaled transposed query weights
        ``(N, heads·d_k, H)``, the null-slot score vectors ``(N, 1, H)``, the head-averaged
        value weight ``(d_v, I)`` when the rows are projected values (``None`` when the
        value map is folded into ``x_gates``) and ``x_gates`` ``(N, R + 1, G)``.
        """
        n, size = self.num_units, self.input_size
        heads, d_k, d_v = self.num_input_heads, self.input_key_size, self.input_value_size
        # Scores: s = <q, k> / sqrt(d_k) averaged over heads, with q = h @ Wq[n]. Applying
        # Wq[n] on the key side gives s_real - s_null = <h, (x @ Wk^T) @ Wq[n]^T>.
        wq_t = query_weight.transpose(1, 2) * (1.0 / (heads * math.sqrt(d_k)))
        null_score = self._per_unit(key_bias.unsqueeze(0), wq_t)  # (N, 1, H)

        # Values (averaged over heads) pushed through every unit's input->gate weights.
        # The read value is w_real·(x W_val^T + b_val) + w_null·b_val, so its gate
        # contribution is [w_real·x, w_real + w_null] @ [W_val^T W_ih[n]; b_val W_ih[n]].
        w_val = value_weight.view(heads, d_v, size).mean(0)  # (d_v, I)
        b_val = value_bias.view(heads, d_v).mean(0)  # (d_v,)
        # Either fold W_val into the gate weights (rows = x, cheap when I is small) or
        # project the values once for the whole sequence (rows = x W_val^T, when I is large
        # or the sequence is short); pick the order with fewer multiply-adds.
        width = weight_ih.shape[-1]
        fold = n * (size + 1) * width * (d_v + count)
        project = count * size * d_v + count * n * (d_v + 1) * width
        if fold <= project:
            value_map = torch.cat((w_val.t(), b_val.unsqueeze(0)))  # (I + 1, d_v)
            return wq_t, null_score, None, self._per_unit(value_map, weight_ih)  # (N, I + 1, G)
        bias_gates = self._per_unit(b_val.unsqueeze(0), weight_ih)  # (N, 1, G)
        return wq_t, null_score, w_val, torch.cat((weight_ih, bias_gates), dim=1)

    def _input_side(self, x: Tensor) -> _InputSide:
        """Everything that depends only on the inputs, for all time steps at once.

        Results are produced directly in unit-major layout by broadcasting the (shared)
        input rows against the per-unit weight blocks, so no weight is ever permuted.
        """
        steps, batch, size = x.shape
        count = steps * batch
        rows = x.reshape(count, size)
        wq_t, null_score, w_val, x_gates = self._input_weights(
            count,
            self.input_query.weight,
            self.input_key.bias,
            self.input_value.weight,
            self.input_value.bias,
            self.cell.weight_ih,
        )
        score = self._per_unit(rows @ self.input_key.weight.t(), wq_t)  # (N, T*B, H), no bias
        step_rows = x if w_val is None else (rows @ w_val.t()).view(steps, batch, -1)
        score = score.view(self.num_units, steps, batch, self.hidden_size)
        return _InputSide(score, null_score, step_rows, x_gates)

    def _step_weights(
        self,
        count: int,
        query_weight: Tensor,
        key_bias: Tensor,
        value_weight: Tensor,
        value_bias: Tensor,
        weight_ih: Tensor,
        weight_hh: Tensor,
        weight_qkv: Tensor,
        weight_out: Tensor,
    ) -> tuple[Tensor, ...]:
        """``(wq_t, null_score, w_val, wcell, wqkv, wout)`` of the native single-step path.

        ``w_val`` is empty when the value map is folded into ``wcell``, the kernel's cell
        weight (see ``_native.kernel_cell_weight``); ``wqkv`` and ``wout`` are the
        communication weights themselves (views), routed through the same autograd node so
        that their gradients are taped too.
        """
        wq_t, null_score, w_val, x_gates = self._input_weights(
            count, query_weight, key_bias, value_weight, value_bias, weight_ih
        )
        w_val = w_val if w_val is not None else x_gates.new_empty(0)
        wcell = _native.kernel_cell_weight(weight_hh, x_gates)
        return (
            wq_t,
            null_score,
            w_val,
            wcell,
            weight_qkv.view_as(weight_qkv),
            weight_out.view_as(weight_out),
        )

    def _forward_native_step(
        self, x: Tensor, hs: Tensor | None, cs: Tensor | None, return_info: bool
    ) -> tuple[Tensor, Tensor | None] | tuple[Tensor, Tensor | None, RIMStepInfo]:
        """`forward` with the native kernels (LSTM units, CPU float32): one call each way.

        The parameter-derived weights (query map, null scores, the kernel's cell weight and,
        for the backward pass, transposed copies) are computed once and shared by the steps
        of a loop until a backward pass or a parameter update (``_native.prepare_weights``),
        so a step costs a few small products, the dropout draws and one native call.
        """
        batch = x.shape[0]
        h0, c0 = self._check_state(hs, cs, batch, x)
        assert c0 is not None
        params = (
            self.input_query.weight,
            self.input_key.bias,
            self.input_value.weight,
            self.input_value.bias,
            self.cell.weight_ih,
            self.cell.weight_hh,
            self.comm_qkv.weight,
            self.comm_out.weight,
        )
        prepared = _native.prepare_weights(
            self, functools.partial(self._step_weights, batch), params, (batch,)
        )
        keeps = self._dropout_masks(1, batch, x)
        score = self._per_unit(x @ self.input_key.weight.t(), prepared.wq_t)  # (N, B, H)
        rows = x if prepared.w_val.numel() == 0 else x @ prepared.w_val.t()
        _, h, c, active, p_real, att = _native.rim_lstm_sequence(
            self,
            score.unsqueeze(1),
            prepared.null_score,
            rows.unsqueeze(0),
            None,
            h0.transpose(0, 1),
            c0.transpose(0, 1),
            keeps,
            False,
            prepared=prepared,
        )
        h_out, c_out = h.transpose(0, 1), c.transpose(0, 1)
        if not return_info:
            return h_out, c_out
        mask = active[0].t() > 0  # (B, N)
        comm = att[0] * mask[:, None, :, None]
        return h_out, c_out, RIMStepInfo(mask, p_real[0].t(), comm)

    def _step(
        self,
        score: Tensor,
        x: Tensor,
        side: _InputSide,
        tapes: _Tapes,
        h: Tensor,
        c: Tensor | None,
        keeps: tuple[Tensor | None, Tensor | None],
        want_info: bool,
    ) -> tuple[Tensor, Tensor | None, tuple[Tensor, Tensor, Tensor] | None]:
        """One RIM step in unit-major layout: h, c ``(N, B, H)``; score, x of step t."""
        # 1-3. input attention scores and the active set.
        diff = (h * score).sum(-1)  # s_real - s_null, (N, B)
        with torch.no_grad():
            rank = diff
            if self.activation == "raw_score":
                rank = diff + (h * side.null_score).sum(-1)
            top = torch.sort(rank, dim=0, descending=True, stable=True).indices[: self.k]
            active = torch.zeros_like(diff, dtype=torch.bool).scatter_(0, top, True)
            active3 = active.unsqueeze(-1)
        # 4. read the input: softmax over [real, null] = sigmoid of the score difference;
        # inactive units read an all-zero input (both weights zero).
        p_real = torch.sigmoid(diff)
        keep = active.to(p_real.dtype)
        if keeps[0] is not None:  # input dropout on the probabilities [real, null]
            w_real = p_real * keeps[0][0]
            w_bias = (w_real + (1.0 - p_real) * keeps[0][1]) * keep
            w_real = w_real * keep
        else:
            w_real, w_bias = p_real * keep, keep
        read = torch.cat((x.unsqueeze(0) * w_real.unsqueeze(-1), w_bias.unsqueeze(-1)), dim=-1)
        # 5.-6. every unit runs its own cell; no gradient into inactive units' fresh states.
        c_out: Tensor | None = None
        if c is not None:
            h_cell, c_out = lstm_masked(tapes.cell.bmm(torch.cat((read, h), dim=-1)), c, active3)
        else:
            assert tapes.hidden is not None
            h_cell = _gru_step(tapes.cell.bmm(read), h, tapes.hidden.bmm(h))
            h_cell = torch.where(active3, h_cell, h_cell.detach())
        # 7. communication: multi-head attention among all units, residual.
        h_new, att = self._communicate(h_cell, tapes, keeps[1])
        # 8. only active units keep the update.
        h_out = torch.where(active3, h_new, h)
        info = None
        if want_info:
            att = att.detach() * active.t()[:, None, :, None].to(att.dtype)
            info = (active, p_real.detach(), att)
        return h_out, c_out, info

    def _communicate(self, h: Tensor, tapes: _Tapes, keep: Tensor | None) -> tuple[Tensor, Tensor]:
        """Multi-head attention among units, residual: h ``(N, B, H)`` → ``h + context``."""
        n, batch, _ = h.shape
        heads, d_k, d_v = self.num_comm_heads, self.comm_key_size, self.comm_value_size
        context, att = unit_attention(tapes.qkv.bmm(h), heads, d_k, d_v, keep)
        out = tapes.out.bmm(context.reshape(n, batch, heads * d_v), add=h)  # residual
        return out, att
