"""A fused, masked LSTM pass with a hand-written backward (the model's hot loop).

CompILE runs one LSTM cell M times over the whole padded sequence; after every cell update
both the hidden and the cell state are multiplied by a soft mask ``w[t]``. Run through
autograd op by op, this loop costs dozens of small kernels per time step in the forward
and again in the backward. This module computes the same function with:

* input projections precomputed for all time steps (``x_t W_ih^T + b`` does not depend on
  the recurrence, nor on the segment, so the caller computes it once per forward and
  reuses it for all M passes);
* one sigmoid over all four gates per step (the cell gate's ``tanh(x) = 2 sigmoid(2x) - 1``;
  the caller doubles the g-gate rows of the projections and of ``W_hh``, which is exact),
  and the cell state's ``tanh`` in the same form (one add, an in-place sigmoid and one
  affine add: about 20 µs on a ``(512, 64)`` block where torch's CPU ``tanh`` takes 45 µs);
* a backward pass written by hand: per step only the elementwise chain rule and one
  ``(B, 4H) @ (4H, H)`` product; the gradient of ``W_hh`` for all steps is one matrix
  product at the end, and the mask gradient is one vectorised reduction.

Gate order is PyTorch's (input, forget, cell, output), so the weights are those of a
``torch.nn.LSTMCell``. The tests check values and gradients against a plain
``nn.LSTMCell`` loop and with ``torch.autograd.gradcheck`` in float64.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.resources
from typing import Any

import torch

from compkit_utils.native import KernelSwitch, check_layout, common_source, load_library


def set_backend(name: str) -> None:
    """Choose how :func:`masked_lstm` runs on CPU float32 tensors.

    ``"auto"`` (default) uses the native kernels when they are available (see
    :mod:`compkit_utils.native`: compiled on first use, disabled by ``COMPKIT_NATIVE=0``) and
    the PyTorch path otherwise; ``"torch"`` always uses the PyTorch path; ``"native"``
    requires the kernels (RuntimeError if they cannot be built). Other devices and dtypes
    always take the PyTorch path.
    """
    _SWITCH.set(name)


_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


class _FwdArgs(ctypes.Structure):
    """``lstm_fwd_args`` of ``masked_lstm.c`` (same fields, same order)."""

    _fields_ = [
        *((name, _I64) for name in ("steps", "B", "T", "H", "keep", "nthreads")),
        *((name, _PTR) for name in ("table", "index", "w", "whh_t", "out", "s", "c", "k")),
        *((name, _PTR) for name in ("ht", "cm")),
    ]


class _BwdArgs(ctypes.Structure):
    """``lstm_bwd_args`` of ``masked_lstm.c`` (same fields, same order)."""

    _fields_ = [
        *((name, _I64) for name in ("steps", "B", "T", "H", "table_rows", "unique", "nthreads")),
        *((name, _PTR) for name in ("index", "s", "c", "k", "ht", "cm", "w", "whh", "out")),
        *((name, _PTR) for name in ("gout", "gtable", "gw", "gwhh_t")),
    ]


@functools.cache
def native_library() -> ctypes.CDLL | None:
    """The compiled ``masked_lstm.c`` kernels, or ``None`` when unavailable.

    Raises:
        compkit_utils.native.NativeUnavailableError: ``COMPKIT_NATIVE=require`` and the
            kernels cannot be built.
        RuntimeError: the C argument structs and ``_FwdArgs``/``_BwdArgs`` disagree.
    """
    source = importlib.resources.files("compile_seg").joinpath("masked_lstm.c").read_text()
    lib = load_library("compile_seg_masked_lstm", common_source() + source, openmp=True)
    if lib is None:
        return None
    check_layout(lib, "masked_lstm_layout", [_FwdArgs, _BwdArgs])
    lib.lstm_forward.argtypes = [ctypes.POINTER(_FwdArgs)]
    lib.lstm_forward.restype = ctypes.c_int
    lib.lstm_backward.argtypes = [ctypes.POINTER(_BwdArgs)]
    lib.lstm_backward.restype = ctypes.c_int
    return lib


_SWITCH = KernelSwitch("masked-LSTM", native_library)


def active_backend(xs: torch.Tensor) -> str:
    """``"native"`` or ``"torch"``: the path :func:`masked_lstm` takes for ``xs``.

    The native kernels take CPU float32 inputs with a hidden size that is a multiple of 32.
    """
    if (
        xs.device.type == "cpu"
        and xs.dtype == torch.float32
        and xs.dim() == 3
        and xs.shape[-1] % 128 == 0  # the kernels' column blocks: H a multiple of 32
        and _SWITCH.native_allowed()
    ):
        return "native"
    return "torch"


def _ptr(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


class _NativeMaskedLSTM(torch.autograd.Function):
    """The masked LSTM in two native calls (forward, backward); inputs as a table + index.

    ``x[t, b] = table[index[b, t]]``: ``index`` is ``(B, T)`` int64; ``unique`` says every
    ``(b, t)`` has its own row (a plain ``(T * B, 4H)`` tensor of projections).
    """

    @staticmethod
    def forward(  # pyright: ignore[reportIncompatibleMethodOverride]
        ctx: Any,
        table: torch.Tensor,
        index: torch.Tensor,
        unique: bool,
        w: torch.Tensor | None,
        whh: torch.Tensor,
        steps: int,
    ) -> torch.Tensor:
        lib = native_library()
        assert lib is not None
        batch, total = index.shape
        gates = table.shape[1]
        hidden = gates // 4
        save = any(ctx.needs_input_grad)
        out = table.new_empty(total, batch, hidden)
        if steps < total:
            out[steps:].zero_()
        keep = total if save else 2
        s_all = table.new_empty(keep, batch, gates)
        c_all, k_all, ht_all, cm_all = table.new_empty(4, keep, batch, hidden).unbind(0)
        if w is None:
            cm_all = c_all
        whh_t = whh.t().contiguous()
        args = _FwdArgs(
            steps, batch, total, hidden, keep, torch.get_num_threads(), table.data_ptr(),
            index.data_ptr(), _ptr(w), whh_t.data_ptr(), out.data_ptr(), s_all.data_ptr(),
            c_all.data_ptr(), k_all.data_ptr(), ht_all.data_ptr(), cm_all.data_ptr(),
        )  # fmt: skip
        status = lib.lstm_forward(ctypes.byref(args))
        if status != 0:
            raise MemoryError("masked_lstm: the native forward pass ran out of memory")
        ctx.steps, ctx.unique, ctx.table_rows = steps, unique, table.shape[0]
        if save:
            ctx.save_for_backward(index, w, whh, out, s_all, c_all, k_all, ht_all, cm_all)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(  # pyright: ignore[reportIncompatibleMethodOverride]
        ctx: Any, *grad_outputs: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        lib = native_library()
        assert lib is not None
        index, w, whh, out, s_all, c_all, k_all, ht_all, cm_all = ctx.saved_tensors
        steps = ctx.steps
        batch, total = index.shape
        hidden = out.shape[2]
        grad_out = grad_outputs[0].contiguous()
        grad_table = out.new_empty(ctx.table_rows, 4 * hidden)
        grad_w = None
        if w is not None:
            grad_w = out.new_empty(total, batch)
            if steps < total:
                grad_w[steps:].zero_()
        grad_whh_t = out.new_empty(hidden, 4 * hidden)
        whh = whh.contiguous()  # kept alive through the call
        args = _BwdArgs(
            steps, batch, total, hidden, ctx.table_rows, int(ctx.unique),
            torch.get_num_threads(), index.data_ptr(), s_all.data_ptr(), c_all.data_ptr(),
            k_all.data_ptr(), ht_all.data_ptr(), cm_all.data_ptr(), _ptr(w),
            whh.data_ptr(), out.data_ptr(), grad_out.data_ptr(),
            grad_table.data_ptr(), _ptr(grad_w), grad_whh_t.data_ptr(),
        )  # fmt: skip
        status = lib.lstm_backward(ctypes.byref(args))
        if status != 0:
            raise MemoryError("masked_lstm: the native backward pass ran out of memory")
        needs = ctx.needs_input_grad
        return (
            grad_table if needs[0] else None,
            None,
            None,
            grad_w if needs[3] else None,
            grad_whh_t.t() if needs[4] else None,
            None,
        )


@functools.cache
def _plain_index(total: int, batch: int) -> torch.Tensor:
    """``(B, T)`` index of row ``t * B + b`` of a ``(T * B, 4H)`` table."""
    return torch.arange(total * batch).view(total, batch).t().contiguous()


def _forward(
    xs: torch.Tensor, w: torch.Tensor | None, whh: torch.Tensor, steps: int, save: bool
) -> tuple[torch.Tensor, ...]:
    """Run the masked recurrence for the first ``steps`` positions.

    Returns ``(E, S, C, K, HT, CM)``: ``E`` (T, B, H) the masked hidden states (rows from
    ``steps`` on are zero); when ``save``, per step the gate sigmoids ``S`` (T, B, 4H), the
    unmasked cell states ``C``, ``K = tanh(C)``, the
    unmasked hidden states ``HT`` and the masked cell states ``CM`` (all (T, B, H));
    without ``save`` those are two-slot scratch buffers. Every intermediate is written into
    a preallocated buffer (no allocation in the loop) and no Python-scalar arithmetic
    happens inside it: ``2 a b - a`` forms use ``addcmul``'s ``value`` argument.
    """
    total, batch, gates = xs.shape
    hidden = gates // 4
    out = xs.new_empty(total, batch, hidden)
    if steps < total:
        out[steps:].zero_()
    keep = total if save else 2  # without saving, two slots alternate (this step, previous)
    s_all = xs.new_empty(keep, batch, gates)
    c_all, k_all, ht_all, cm_all = xs.new_empty(4, keep, batch, hidden).unbind(0)
    if w is None:
        cm_all = c_all  # without a mask the state carried on is c~ itself
    neg = xs.new_empty(batch, hidden)
    w3 = w.unsqueeze(2) if w is not None else None
    whh_t = whh.t().contiguous()
    pre = xs.new_empty(batch, gates)
    minus_one = xs.new_full((), -1.0)
    for t in range(steps):
        slot = t if save else t % 2
        s = s_all[slot]
        if t == 0:
            torch.sigmoid(xs[0], out=s)
        else:
            torch.addmm(xs[t], out[t - 1], whh_t, out=pre)
            torch.sigmoid(pre, out=s)
        i, f, g2, o = s.split(hidden, dim=1)
        # c~ = i * tanh(z_g) + f * c with tanh(z_g) = 2 g2 - 1, i.e. 2 i g2 - i + f c.
        c_new = torch.addcmul(torch.neg(i, out=neg), i, g2, value=2.0, out=c_all[slot])
        if t > 0:
            c_new.addcmul_(f, cm_all[t - 1 if save else 1 - slot])
        # tanh(c~) = 2 sigmoid(2 c~) - 1: on these (B, H) blocks torch's CPU tanh is more than
        # twice as slow as these three kernels together (measured 45 us against 20 us).
        k = torch.add(c_new, c_new, out=k_all[slot])
        k.sigmoid_()
        torch.add(minus_one, k, alpha=2.0, out=k)
        # h~ = o * tanh(c~), then the mask on both states.
        if w3 is None:
            torch.mul(o, k, out=out[t])  # (HT is only needed for the mask's gradient)
        else:
            h_tilde = torch.mul(o, k, out=ht_all[slot])
            torch.mul(h_tilde, w3[t], out=out[t])
            torch.mul(c_new, w3[t], out=cm_all[slot])
    return out, s_all, c_all, k_all, ht_all, cm_all


class _MaskedLSTM(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, xs: torch.Tensor, w: torch.Tensor | None, whh: torch.Tensor, steps: int
    ) -> torch.Tensor:
        save = any(ctx.needs_input_grad)
        out, s_all, c_all, k_all, ht_all, cm_all = _forward(xs, w, whh, steps, save)
        ctx.steps = steps
        if save:
            ctx.save_for_backward(w, whh, out, s_all, c_all, k_all, ht_all, cm_all)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(  # pyright: ignore[reportIncompatibleMethodOverride]
        ctx: Any, *grad_outputs: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        w, whh, out, s_all, c_all, k_all, ht_all, cm_all = ctx.saved_tensors
        steps = ctx.steps
        total, batch, gates = s_all.shape
        hidden = gates // 4
        grad_out = grad_outputs[0].contiguous()
        w3 = w.unsqueeze(2) if w is not None else None
        dz_all = s_all.new_empty(total, batch, gates)
        dz_all[steps:].zero_()
        dz_all[0, :, hidden : 2 * hidden].zero_()  # the forget gate at t = 0 sees c = 0
        dh_all, dc_all = s_all.new_empty(2, total, batch, hidden).unbind(0)
        dc_all[steps - 1].zero_()
        # dh_all[t]: total gradient of h_t, i.e. grad_out[t] plus what reaches h_t through
        # step t + 1 (one addmm per step writes both terms).
        dh_all[steps - 1].copy_(grad_out[steps - 1])
        zero = s_all.new_zeros(batch, hidden)
        ones = s_all.new_ones(batch, hidden)
        neg, dht, dct, kk, tmp = s_all.new_empty(5, batch, hidden).unbind(0)
        ds = s_all.new_empty(batch, gates)
        for t in range(steps - 1, -1, -1):
            s = s_all[t]
            i, f, g2, o = s.split(hidden, dim=1)
            k = k_all[t]
            dz = dz_all[t]
            dz_i, dz_f, dz_g, dz_o = dz.split(hidden, dim=1)
            dh = dh_all[t]
            if w3 is None:
                # No mask: h~ = h and c~ = c (dc_all is not needed after this step).
                dht, dct = dh, dc_all[t]
            else:
                torch.mul(dh, w3[t], out=dht)  # gradient of h~_t
                torch.mul(dc_all[t], w3[t], out=dct)
            # d h~ / d c~ = o (1 - tanh^2(c~)) = o (1 - k^2)
            torch.addcmul(ones, k, k, value=-1.0, out=kk)
            dct.addcmul_(torch.mul(dht, o, out=tmp), kk)  # gradient of c~_t
            # Gradients of the gate outputs (tanh(z_g) = 2 g2 - 1, tanh(c~) = k) ...
            torch.addcmul(torch.neg(dct, out=neg), dct, g2, value=2.0, out=dz_i)
            if t > 0:
                torch.mul(dct, cm_all[t - 1], out=dz_f)
            torch.addcmul(zero, dct, i, value=2.0, out=dz_g)
            torch.mul(dht, k, out=dz_o)
            # ... times the sigmoid derivatives give the pre-activation gradients.
            dz.mul_(torch.addcmul(s, s, s, value=-1.0, out=ds))
            if t > 0:
                torch.addmm(grad_out[t - 1], dz, whh, out=dh_all[t - 1])
                torch.mul(dct, f, out=dc_all[t - 1])
        grad_xs = dz_all if ctx.needs_input_grad[0] else None
        grad_w = None
        if w is not None and ctx.needs_input_grad[1]:
            grad_w = (dh_all[:steps] * ht_all[:steps]).sum(2) + (
                dc_all[:steps] * c_all[:steps]
            ).sum(2)
            if steps < total:
                grad_w = torch.cat([grad_w, grad_w.new_zeros(total - steps, batch)])
        grad_whh = None
        if ctx.needs_input_grad[2]:
            grad_whh = dz_all[1:steps].reshape(-1, gates).t() @ out[: steps - 1].reshape(-1, hidden)
        return grad_xs, grad_w, grad_whh, None


def masked_lstm(
    xs: torch.Tensor, w: torch.Tensor | None, whh: torch.Tensor, steps: int | None = None
) -> torch.Tensor:
    """One masked LSTM pass from a zero state, with a fused backward.

    The recurrence, for t = 0..steps-1 with ``(h, c) = (0, 0)`` before t = 0::

        s = sigmoid(xs[t] + h @ whh.T)            # i, f, g', o blocks of width H
        c~ = f * c + i * (2 g' - 1)                # 2 g' - 1 = tanh of the true cell gate
        h~ = o * tanh(c~)
        h, c = w[t] * h~, w[t] * c~                # the mask wipes (or scales) the state

    Args:
        xs: ``(T, B, 4H)`` input projections ``x_t W_ih^T + b_ih + b_hh`` with the cell-gate
            block (columns 2H..3H) multiplied by 2.
        w: ``(T, B)`` mask in [0, 1], or ``None`` for a mask of ones (no multiplication).
        whh: ``(4H, H)`` recurrent weight with the cell-gate rows multiplied by 2.
        steps: run only positions ``0..steps-1`` (default all T); later rows of the output
            are zero and get no gradient.

    Returns:
        ``(T, B, H)`` masked hidden states ``h_t``.
    """
    total = xs.shape[0] if xs.dim() == 3 else -1
    steps = total if steps is None else steps
    if (
        xs.dim() != 3
        or (w is not None and w.shape != xs.shape[:2])
        or whh.shape != (xs.shape[2], xs.shape[2] // 4)
        or not 1 <= steps <= total
    ):
        raise ValueError(
            f"masked_lstm: shapes xs {tuple(xs.shape)}, w "
            f"{None if w is None else tuple(w.shape)}, whh {tuple(whh.shape)}, steps {steps} "
            "do not fit (T, B, 4H), (T, B), (4H, H), 1 <= steps <= T"
        )
    if active_backend(xs) == "native" and _native_inputs_ok(w, whh):
        total, batch, gates = xs.shape
        table = xs.contiguous().view(total * batch, gates)
        index = _plain_index(total, batch)
        w = w.contiguous() if w is not None else None
        out = _NativeMaskedLSTM.apply(table, index, True, w, whh, steps)
        return out  # type: ignore[no-any-return]
    return _MaskedLSTM.apply(xs, w, whh, steps)  # type: ignore[no-any-return]


def masked_lstm_tokens(
    table: torch.Tensor,
    tokens: torch.Tensor,
    w: torch.Tensor | None,
    whh: torch.Tensor,
    steps: int | None = None,
) -> torch.Tensor:
    """:func:`masked_lstm` of ``xs[t, b] = table[tokens[b, t]]`` (an embedded sequence).

    With the native kernels the ``(T, B, 4H)`` projections are never materialised: each
    step gathers its rows from the table, and the backward pass sums the gradients into
    the table's rows. The PyTorch path gathers first.

    Args:
        table: ``(V, 4H)`` per-token projections ``embed @ W_ih^T + b_ih + b_hh``, cell-gate
            block doubled.
        tokens: ``(B, T)`` int64 tokens in ``[0, V)``.
        w: ``(T, B)`` mask or ``None``.
        whh: ``(4H, H)`` recurrent weight, cell-gate rows doubled (as in :func:`masked_lstm`).
        steps: run only positions ``0..steps-1`` (default all T).

    Returns:
        ``(T, B, H)`` masked hidden states.
    """
    if table.dim() != 2 or tokens.dim() != 2 or tokens.dtype != torch.int64:
        raise ValueError(
            f"masked_lstm_tokens: table {tuple(table.shape)} must be (V, 4H) and tokens "
            f"{tuple(tokens.shape)} (B, T) int64, got {tokens.dtype}"
        )
    batch, total = tokens.shape
    gates = table.shape[1]
    steps = total if steps is None else steps
    if (
        (w is not None and w.shape != (total, batch))
        or whh.shape != (gates, gates // 4)
        or not 1 <= steps <= total
    ):
        raise ValueError(
            f"masked_lstm_tokens: shapes table {tuple(table.shape)}, tokens "
            f"{tuple(tokens.shape)}, w {None if w is None else tuple(w.shape)}, whh "
            f"{tuple(whh.shape)}, steps {steps} do not fit (V, 4H), (B, T), (T, B), (4H, H)"
        )
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= table.shape[0]):
        raise ValueError(f"masked_lstm_tokens: tokens must lie in [0, {table.shape[0]})")
    if active_backend(table.unsqueeze(0)) == "native" and _native_inputs_ok(w, whh):
        w = w.contiguous() if w is not None else None
        out = _NativeMaskedLSTM.apply(table.contiguous(), tokens.contiguous(), False, w, whh, steps)
        return out  # type: ignore[no-any-return]
    xs = torch.nn.functional.embedding(tokens.t(), table)
    return masked_lstm(xs, w, whh, steps)


def _native_inputs_ok(w: torch.Tensor | None, whh: torch.Tensor) -> bool:
    return (
        whh.dtype == torch.float32
        and whh.device.type == "cpu"
        and (w is None or (w.dtype == torch.float32 and w.device.type == "cpu"))
    )
