"""Native (C) time loop of a RIM layer with LSTM units (internal; see ``rim_lstm.c``).

On CPU a RIM step is ~70 small tensor ops, so the PyTorch path spends most of its time in
per-op dispatch, not arithmetic. ``rim_lstm.c`` runs the whole recurrence — input
attention, top-k selection, the units' LSTM cells, communication attention, masking — for
every time step in one forward and one backward call, each thread owning a block of batch
rows. It is compiled on first use by :mod:`compkit_utils.native` (cached; no build step at
install time) and used automatically for CPU float32 LSTM layers; everything else, and any
machine without a C compiler, takes the PyTorch path in ``cell.py``. Both paths compute
the same function (tested to float32 rounding, in train mode too: both take the
sequence's dropout masks from ``RIMCell._dropout_masks``).

``RIMCell.forward`` (one step) calls the same kernels with one time step. Its
parameter-derived weights (input-query map, the kernel's cell weight, transposed copies
for the backward pass) come from :func:`prepare_weights`: one autograd node shared by all
steps of a loop, whose backward pass receives the steps' weight gradients summed in place
(each step's native backward call adds its products to running sums, one unit per thread)
and runs once.

Not supported by the native path: double backward (``create_graph=True``).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.resources
import weakref
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor

from compkit_utils.native import KernelSwitch, check_layout, common_source, load_library

if TYPE_CHECKING:
    from rim_cells.cell import RIMCell

__all__ = ["SWITCH", "active_backend", "native_library", "rim_lstm_sequence", "set_backend"]

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


class _Dims(ctypes.Structure):
    """``rim_dims`` of ``rim_lstm.c``: sizes and flags of a pass."""

    _fields_ = [
        (name, _I64)
        for name in ("N", "B", "T", "H", "R", "Kp", "heads", "dk", "dv", "k", "save", "reverse")
    ] + [("nthreads", _I64)]


_FWD_FIELDS = [
    "score",
    "null_score",
    "rows",
    "wcell",
    "wqkv",
    "wout",
    "h0",
    "c0",
    "in_keep",
    "comm_keep",
    "out",
    "h_last",
    "c_last",
    "act",
    "p",
    "att",
    "u",
    "gact",
    "cprev",
    "tc",
    "hcell",
    "qkv",
    "ctx",
]
_BWD_FIELDS = [
    "score",
    "rows",
    "wcell_t",
    "wqkv_t",
    "wout_t",
    "in_keep",
    "comm_keep",
    "act",
    "p",
    "att",
    "u",
    "gact",
    "cprev",
    "tc",
    "qkv",
    "gout",
    "gc_last",
    "dscore",
    "drows",
    "dh0",
    "dc0",
    "dgates",
    "dqkv",
    "dhnew",
    "hcell",
    "ctx",
    "acc_wcell",
    "acc_wqkv",
    "acc_wout",
]


class _FwdArgs(ctypes.Structure):
    """``rim_fwd_args`` of ``rim_lstm.c`` (same fields, same order)."""

    _fields_ = [("d", _Dims)] + [(name, _PTR) for name in _FWD_FIELDS]


class _BwdArgs(ctypes.Structure):
    """``rim_bwd_args`` of ``rim_lstm.c`` (same fields, same order)."""

    _fields_ = [("d", _Dims)] + [(name, _PTR) for name in _BWD_FIELDS]


def set_backend(name: str) -> None:
    """Choose how RIM layers with LSTM units run on CPU float32 tensors.

    ``"auto"`` (default) uses the native kernels when they are available (compiled on first
    use; ``COMPKIT_NATIVE=0`` disables them) and the PyTorch path otherwise; ``"torch"``
    always uses the PyTorch path; ``"native"`` requires the kernels (RuntimeError if they
    cannot be built). GRU units, other devices and other dtypes always take the PyTorch path.
    """
    SWITCH.set(name)


@functools.cache
def native_library() -> ctypes.CDLL | None:
    """The compiled ``rim_lstm.c`` kernels, or ``None`` when unavailable."""
    source = importlib.resources.files("rim_cells").joinpath("rim_lstm.c").read_text()
    lib = load_library("rim_cells_rim_lstm", common_source() + source, openmp=True)
    if lib is None:
        return None
    check_layout(lib, "rim_lstm_layout", [_FwdArgs, _BwdArgs])
    lib.rim_forward.argtypes = [ctypes.POINTER(_FwdArgs)]
    lib.rim_backward.argtypes = [ctypes.POINTER(_BwdArgs)]
    lib.rim_forward.restype = lib.rim_backward.restype = ctypes.c_int
    return lib


SWITCH = KernelSwitch("RIM", native_library)
"""The package's kernel switch (``SWITCH.backend`` is the current choice)."""


def active_backend(cell: RIMCell, x: Tensor) -> str:
    """``"native"`` or ``"torch"``: the path ``cell.forward_sequence(x)`` takes."""
    if (
        cell.is_lstm
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and SWITCH.native_allowed()
    ):
        return "native"
    return "torch"


def _pointers(tensors: list[Tensor | None]) -> list[int | None]:
    return [None if t is None else t.data_ptr() for t in tensors]


class _RimLSTM(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        score: Tensor,
        rows: Tensor,
        wcell: Tensor,
        wqkv: Tensor,
        wout: Tensor,
        h0: Tensor,
        c0: Tensor,
        meta: dict[str, Any],
    ) -> tuple[Tensor, ...]:
        lib = native_library()
        assert lib is not None
        n, steps, batch, hid = score.shape
        heads, d_k, d_v = meta["heads"], meta["d_k"], meta["d_v"]
        qkv_w, ctx_w, kp = heads * (2 * d_k + d_v), heads * d_v, wcell.shape[1]
        save = meta["save"]
        slots = steps if save else 1
        dims = _Dims(
            n, batch, steps, hid, rows.shape[-1], kp, heads, d_k, d_v, meta["k"], int(save),
            int(meta["reverse"]), torch.get_num_threads(),
        )  # fmt: skip
        new = functools.partial(torch.empty, dtype=score.dtype)
        out, h_last, c_last = new(steps, n, batch, hid), new(n, batch, hid), new(n, batch, hid)
        act, p_real = new(steps, n, batch), new(steps, n, batch)
        att = new(steps, batch, heads, n, n)
        u, gact = new(n, slots, batch, kp), new(n, slots, batch, 4 * hid)
        cprev, tc, hcell = (new(n, slots, batch, hid) for _ in range(3))
        qkv, context = new(n, slots, batch, qkv_w), new(n, slots, batch, ctx_w)
        in_keep, comm_keep = meta["in_keep"], meta["comm_keep"]
        ptrs = _pointers(
            [score, meta["null_score"], rows, wcell, wqkv, wout, h0, c0, in_keep, comm_keep,
             out, h_last, c_last, act, p_real, att, u, gact, cprev, tc, hcell, qkv, context]
        )  # fmt: skip
        if lib.rim_forward(ctypes.byref(_FwdArgs(dims, *ptrs))):
            raise MemoryError("RIM: the native forward pass ran out of memory")
        if save:
            ctx.save_for_backward(
                score, rows, wcell, wqkv, wout, act, p_real, att, u, gact, cprev, tc, hcell,
                qkv, context,
            )  # fmt: skip
            ctx.dims, ctx.reverse = dims, meta["reverse"]
            ctx.keeps = (in_keep, comm_keep)
            ctx.transposed = meta.get("transposed")
            ctx.tape, ctx.derive_node = meta.get("tape"), meta.get("derive_node")
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(act, p_real, att)
        return out, h_last, c_last, act, p_real, att

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, *grads: Any) -> Any:  # pyright: ignore[reportIncompatibleMethodOverride]
        lib = native_library()
        assert lib is not None
        g_out, g_h, g_c = grads[0], grads[1], grads[2]
        (score, rows, wcell, wqkv, wout, act, p_real, att, u, gact, cprev, tc, hcell, qkv,
         context) = ctx.saved_tensors  # fmt: skip
        n, steps, batch, hid = score.shape
        if g_out is None:
            g_out = score.new_zeros(steps, n, batch, hid)
        elif g_h is not None:  # a private copy: the final state's gradient is added below
            g_out = g_out.clone(memory_format=torch.contiguous_format)
        else:
            g_out = g_out.contiguous()
        if g_h is not None:  # the final h is the output of the last step processed
            g_out[0 if ctx.reverse else steps - 1] += g_h
        g_c = g_c.contiguous() if g_c is not None else None
        new = functools.partial(torch.empty, dtype=score.dtype)
        d_score, dh0, dc0 = new(n, steps, batch, hid), new(n, batch, hid), new(n, batch, hid)
        d_rows = torch.zeros_like(rows) if ctx.needs_input_grad[1] else None
        d_gates, d_hnew = new(n, steps, batch, 4 * hid), new(n, steps, batch, hid)
        d_qkv = new(n, steps, batch, qkv.shape[-1])
        memo: dict[str, Tensor] | None = ctx.transposed
        if memo is not None and "wcell_t" in memo:  # shared by the steps of a stepped loop
            wcell_t, wqkv_t, wout_t = memo["wcell_t"], memo["wqkv_t"], memo["wout_t"]
        else:
            wcell_t, wqkv_t, wout_t = (w.transpose(1, 2).contiguous() for w in (wcell, wqkv, wout))
            if memo is not None:
                memo.update(wcell_t=wcell_t, wqkv_t=wqkv_t, wout_t=wout_t)
        # A stepped loop (tape): the kernel adds this step's weight gradients to running sums
        # that the shared weights' node hands to autograd once; none when that node is not
        # part of this backward pass (e.g. a gradient for the initial state only).
        tape: list[Tensor] | None = ctx.tape
        stepped = tape is not None
        if tape is not None and torch._C._will_engine_execute_node(ctx.derive_node):
            if not tape:
                tape += [w.new_zeros(w.shape) for w in (wcell, wqkv, wout)]
            acc: list[Tensor | None] = [hcell, context, *tape]
        else:
            acc = [None] * 5
        in_keep, comm_keep = ctx.keeps
        ptrs = _pointers(
            [score, rows, wcell_t, wqkv_t, wout_t, in_keep, comm_keep, act, p_real, att, u,
             gact, cprev, tc, qkv, g_out, g_c, d_score, d_rows, dh0, dc0, d_gates, d_qkv,
             d_hnew, *acc]
        )  # fmt: skip
        ctx.dims.nthreads = torch.get_num_threads()
        if lib.rim_backward(ctypes.byref(_BwdArgs(ctx.dims, *ptrs))):
            raise MemoryError("RIM: the native backward pass ran out of memory")
        if stepped:
            return d_score, d_rows, None, None, None, dh0, dc0, None

        def weight_grad(inputs: Tensor, outputs: Tensor) -> Tensor:
            """Sum over all steps and rows of inputs^T outputs, per unit: one batched product."""
            flat_in = inputs.view(n, steps * batch, -1).transpose(1, 2)
            return torch.bmm(flat_in, outputs.view(n, steps * batch, -1))

        g_wcell = weight_grad(u, d_gates) if ctx.needs_input_grad[2] else None
        g_wqkv = weight_grad(hcell, d_qkv) if ctx.needs_input_grad[3] else None
        g_wout = weight_grad(context, d_hnew) if ctx.needs_input_grad[4] else None
        return d_score, d_rows, g_wcell, g_wqkv, g_wout, dh0, dc0, None


def _kernel_gate_order(weight: Tensor) -> Tensor:
    """Gate columns ``[i | f | o | g]`` (the group cell's) → ``[i | f | g | o]`` (the kernels').

    Args:
        weight: ``(..., 4H)`` with the cell's gate blocks in its last dimension.
    """
    i_f, o, g = weight.split(
        [weight.shape[-1] // 2, weight.shape[-1] // 4, weight.shape[-1] // 4], -1
    )
    return torch.cat((i_f, g, o), dim=-1)


def kernel_cell_weight(weight_hh: Tensor, x_gates: Tensor) -> Tensor:
    """The kernel's cell weight ``(N, H + R + 1, 4H)``, gates in the kernels' order.

    Rows ``[h | read | bias]``: ``weight_hh`` ``(N, H, 4H)`` then ``x_gates`` ``(N, R + 1, 4H)``.
    """
    return _kernel_gate_order(torch.cat((weight_hh, x_gates), dim=1))


class Prepared(NamedTuple):
    """Parameter-derived tensors shared by the steps of a stepped loop.

    Attributes:
        wq_t: ``(N, heads·d_k, H)`` scaled, transposed input-query weights.
        null_score: ``(N, 1, H)`` null-slot score vectors.
        w_val: ``(d_v, I)`` value weight averaged over heads when the step's rows are
            projected values, or an empty tensor when the value map is folded into ``wcell``.
        wcell: ``(N, H + R + 1, 4H)`` the kernel's cell weight (:func:`kernel_cell_weight`).
        wqkv: ``(N, H, QKV)`` the communication query/key/value weight.
        wout: ``(N, C, H)`` the communication output weight.
        transposed: memo of the transposed weights for the backward passes of these steps.
        tape: with grad, the running sums of the steps' gradients of ``wcell``, ``wqkv``
            and ``wout`` (added to by each step's native backward call, handed to
            autograd once by the shared node's); ``None`` without grad.
        node: with grad, the autograd node that produced these tensors.
    """

    wq_t: Tensor
    null_score: Tensor
    w_val: Tensor
    wcell: Tensor
    wqkv: Tensor
    wout: Tensor
    transposed: dict[str, Tensor]
    tape: list[Tensor] | None
    node: Any


class _StepCache:
    """A layer's :class:`Prepared` weights, kept while parameters and grad mode are unchanged.

    Not copied by ``copy.deepcopy`` nor pickled (a copy starts empty).
    """

    __slots__ = ("__weakref__", "key", "value")

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.value: Prepared | None = None

    def clear(self) -> None:
        self.key = self.value = None

    def __deepcopy__(self, memo: dict[int, Any]) -> _StepCache:
        return _StepCache()

    def __reduce__(self) -> tuple[type[_StepCache], tuple[()]]:
        return (_StepCache, ())


class _Derive(torch.autograd.Function):
    """Parameter-derived tensors as one autograd node that many steps consume.

    The forward pass computes ``fn(*params)`` without recording; autograd sums the gradients
    that all consuming steps send to its outputs and calls the backward pass once, which
    adds the steps' summed weight gradients (:class:`Prepared`'s tape), recomputes ``fn`` with
    recording and differentiates it. Parameters are held as plain attributes (not saved
    tensors), so graphs that share this node can each be differentiated; the backward pass
    also drops the layer's cached copy, so the next forward pass derives the weights afresh.
    """

    @staticmethod
    def forward(  # pyright: ignore[reportIncompatibleMethodOverride]
        ctx: Any, fn: Any, cache: Any, tape: list[Tensor], *params: Tensor
    ) -> tuple[Tensor, ...]:
        ctx.fn, ctx.cache, ctx.tape, ctx.params = fn, cache, tape, params
        ctx.versions = [p._version for p in params]
        ctx.set_materialize_grads(False)
        return tuple(fn(*params))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, *grads: Tensor | None) -> Any:  # pyright: ignore[reportIncompatibleMethodOverride]
        cache = ctx.cache()
        if cache is not None:
            cache.clear()
        params: tuple[Tensor, ...] = ctx.params
        if [p._version for p in params] != ctx.versions:
            raise RuntimeError(
                "RIMCell: a parameter was modified in place between the forward and the "
                "backward pass of a stepped loop"
            )
        grads_list = list(grads)
        tape: list[Tensor] = ctx.tape
        for slot, grad in zip((3, 4, 5), tape, strict=False):  # wcell, wqkv, wout
            prev = grads_list[slot]
            grads_list[slot] = grad if prev is None else prev + grad
        tape.clear()
        with torch.enable_grad():
            needs = ctx.needs_input_grad[3:]
            leaves = [
                p.detach().requires_grad_(need) for p, need in zip(params, needs, strict=True)
            ]
            outs = ctx.fn(*leaves)
            pairs = [
                (o, g)
                for o, g in zip(outs, grads_list, strict=True)
                if g is not None and o.requires_grad
            ]
            wanted = [leaf for leaf in leaves if leaf.requires_grad]
            found: list[Tensor | None] = [None] * len(wanted)
            if pairs and wanted:
                found = list(
                    torch.autograd.grad(
                        [o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True
                    )
                )
        it = iter(found)
        return (None, None, None, *(next(it) if leaf.requires_grad else None for leaf in leaves))


def prepare_weights(
    layer: Any, fn: Any, params: tuple[Tensor, ...], extra_key: tuple[Any, ...]
) -> Prepared:
    """The :class:`Prepared` weights of a layer, shared by consecutive steps.

    With grad enabled the result is cached on the layer (``layer._native_step_cache``) until
    a backward pass goes through it or a parameter changes (in place or replaced); without
    grad it is computed afresh (parameters may then be edited through ``.data``, which a
    cache could not notice).

    Args:
        layer: the module stepping (holds the cache).
        fn: ``fn(*params) -> (wq_t, null_score, w_val, wcell, wqkv, wout)``.
        params: the parameters ``fn`` reads.
        extra_key: anything else ``fn``'s result depends on (e.g. the batch size).
    """
    if not torch.is_grad_enabled():
        with torch.no_grad():
            return Prepared(*fn(*params), transposed={}, tape=None, node=None)
    cache = layer.__dict__.get("_native_step_cache")
    if cache is None:
        cache = layer.__dict__["_native_step_cache"] = _StepCache()
    key = (extra_key, tuple((id(p), p.data_ptr(), p._version, p.requires_grad) for p in params))
    if cache.key == key and cache.value is not None:
        return cache.value
    tape: list[Tensor] = []
    derived = _Derive.apply(fn, weakref.ref(cache), tape, *params)
    node = derived[0].grad_fn
    cache.key = key
    cache.value = Prepared(
        *derived, transposed={}, tape=tape if node is not None else None, node=node
    )
    return cache.value


def rim_lstm_sequence(
    cell: RIMCell,
    score: Tensor,
    null_score: Tensor,
    rows: Tensor,
    x_gates: Tensor | None,
    h0: Tensor,
    c0: Tensor,
    keeps: tuple[Tensor | None, Tensor | None],
    reverse: bool,
    prepared: Prepared | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Run a LSTM RIM layer over a sequence with the native kernels.

    Args:
        cell: the layer (weights, sizes, dropout, activation rule, training mode).
        score: ``(N, T, B, H)`` input-attention score vectors (``s_real − s_null = <h, score>``).
        null_score: ``(N, 1, H)`` null-slot score vectors (used by the raw-score rule only).
        rows: ``(T, B, R)`` cell-input rows.
        x_gates: ``(N, R + 1, 4H)`` the rows' (and the bias weight's) map to the gates
            (``None`` with ``prepared``).
        h0: ``(N, B, H)`` initial hidden state, unit-major.
        c0: ``(N, B, H)`` initial cell state, unit-major.
        keeps: dropout multipliers ``(T, 2, N, B)`` and ``(T, B·heads, N, N)`` (or ``None``).
        reverse: run the steps from last to first.
        prepared: the cell weight in the kernels' layout (``wcell``) and a memo of the
            transposed weights shared by the steps of a stepped loop (see
            :func:`prepare_weights`); ``x_gates`` is then not used.

    Returns:
        ``(out, h, c, active, p_real, attention)``: the hidden state after every step
        ``(T, N, B, H)``, the final states ``(N, B, H)``, the active mask and the real-input
        attention ``(T, N, B)`` (float), and the communication attention before dropout
        ``(T, B, heads, N, N)``.
    """
    n = score.shape[0]
    in_keep, comm_keep = keeps
    if prepared is not None:
        wcell = prepared.wcell
    else:
        assert x_gates is not None
        wcell = kernel_cell_weight(cell.cell.weight_hh, x_gates)
    tensors = (
        score.contiguous(),
        rows.contiguous(),
        wcell,
        cell.comm_qkv.weight.contiguous() if prepared is None else prepared.wqkv,
        cell.comm_out.weight.contiguous() if prepared is None else prepared.wout,
        h0.contiguous(),
        c0.contiguous(),
    )
    meta = {
        "heads": cell.num_comm_heads,
        "d_k": cell.comm_key_size,
        "d_v": cell.comm_value_size,
        "k": cell.k,
        "reverse": reverse,
        "null_score": (
            null_score.reshape(n, -1).contiguous() if cell.activation == "raw_score" else None
        ),
        "in_keep": in_keep.contiguous() if in_keep is not None else None,
        "comm_keep": comm_keep.contiguous() if comm_keep is not None else None,
        "save": torch.is_grad_enabled() and any(t.requires_grad for t in tensors),
        "transposed": prepared.transposed if prepared is not None else None,
        "tape": prepared.tape if prepared is not None else None,
        "derive_node": prepared.node if prepared is not None else None,
    }
    return _RimLSTM.apply(*tensors, meta)
