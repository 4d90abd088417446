"""Native (C) training step of the vector LPN (internal; see ``lpn_vector.c``).

A vector-LPN step at the paper's sizes (batch 32, |Z| = 2, ngf 128) is about 14M
multiply-adds in a dozen small matrix products plus ~40 elementwise ops; as PyTorch ops the
per-op dispatch costs about as much as the arithmetic. ``lpn_vector.c`` does the forward
pass of every latent branch, both losses and the whole hand-written backward pass in one
call (the Adam update stays torch's fused kernel). It is compiled on first use by
:mod:`compkit_utils.native` (cached; no build step at install time) and used automatically
for float32 CPU models whose parameters live in a :class:`ilpo.lpn.FlatAdam`'s buffers;
anything else, and a machine without a C compiler, takes the PyTorch path
(``VectorLPN.loss_and_grads_torch``). Both compute the same function (tested to float32
rounding); they differ in the last bits, so a seeded run reproduces exactly on one path.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.resources
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from compkit_utils.native import KernelSwitch, check_layout, common_source, load_library

if TYPE_CHECKING:
    from ilpo.lpn import VectorLPN

__all__ = ["SWITCH", "native_library", "native_step", "set_backend"]

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


class _Args(ctypes.Structure):
    """``lpn_args`` of ``lpn_vector.c``."""

    _fields_ = [(name, _I64) for name in ("B", "Z", "d", "G")] + [
        (name, _PTR)
        for name in ("s", "s_next", "params", "grads", "losses", "best", "probs", "scratch")
    ]


@functools.cache
def native_library() -> ctypes.CDLL | None:
    """The compiled ``lpn_vector.c``, or ``None`` when native kernels are unavailable."""
    source = importlib.resources.files("ilpo").joinpath("lpn_vector.c").read_text()
    lib = load_library("ilpo_lpn_vector", common_source() + source)
    if lib is None:
        return None
    check_layout(lib, "lpn_layout", [_Args])
    lib.lpn_step.argtypes = [ctypes.POINTER(_Args)]
    lib.lpn_step.restype = ctypes.c_int
    for fn in (lib.lpn_scratch_floats, lib.lpn_param_count):
        fn.restype = _I64
    lib.lpn_scratch_floats.argtypes = [_I64] * 4
    lib.lpn_param_count.argtypes = [_I64] * 3
    return lib


SWITCH = KernelSwitch("LPN", native_library)
"""The kernel switch: ``SWITCH.set("torch")`` forces the PyTorch path (tests, benchmarks)."""


def set_backend(name: str) -> None:
    """``"auto"`` (default), ``"torch"`` or ``"native"`` for the vector LPN's training step."""
    SWITCH.set(name)


def _flat_buffers(model: VectorLPN) -> tuple[int, int] | None:
    """Data pointers of the flat parameter and gradient buffers, or ``None``.

    The kernel reads the 14 parameters as one buffer in ``model.parameters()`` order and
    writes their gradients the same way, which is how :class:`ilpo.lpn.FlatAdam` lays them
    out; any other arrangement (no optimizer attached, another optimizer) returns ``None``.
    """
    params = list(model.parameters())
    first, grad0 = params[0], params[0].grad
    if grad0 is None:
        return None
    p0, g0 = first.data_ptr(), grad0.data_ptr()
    offset = 0
    for p in params:
        g = p.grad
        if (
            g is None
            or p.dtype != torch.float32
            or not p.is_contiguous()
            or not g.is_contiguous()
            or p.data_ptr() != p0 + 4 * offset
            or g.data_ptr() != g0 + 4 * offset
        ):
            return None
        offset += p.numel()
    return p0, g0


def native_step(model: VectorLPN, s: Tensor, s_next: Tensor) -> tuple[Tensor, ...] | None:
    """Losses and gradients by the C kernel, or ``None`` when it does not apply.

    Returns ``(losses [3] = (L_min + L_exp, L_min, L_exp), best [B], probs [B, Z])``.
    """
    if (
        s.device.type != "cpu"
        or s.dtype != torch.float32
        or s_next.dtype != torch.float32
        or s.dim() != 2
        or s.shape[1] != model.state_dim
        or s_next.shape != s.shape  # the PyTorch path raises its shape error
        or not SWITCH.native_allowed()
    ):
        return None
    lib = native_library()
    assert lib is not None  # native_allowed() checked it
    cache = model.__dict__.setdefault("_native_cache", {})
    weight, grad = model.enc1.weight, model.enc1.weight.grad
    buffers = cache.get("buffers")
    if grad is None or buffers != (weight.data_ptr(), grad.data_ptr()):
        buffers = _flat_buffers(model)  # checked once per optimizer attachment
        if buffers is None:
            return None
        cache.clear()
        cache["buffers"] = buffers
    b, z, d, g = s.shape[0], model.n_latent, model.state_dim, model.ngf
    s = s.contiguous()
    s_next = s_next.contiguous()
    scratch = cache.get(("scratch", b))
    if scratch is None:
        scratch = torch.empty(int(lib.lpn_scratch_floats(b, z, d, g)), dtype=torch.float32)
        cache[("scratch", b)] = scratch
    losses = torch.empty(3, dtype=torch.float32)
    best = torch.empty(b, dtype=torch.int64)
    probs = torch.empty(b, z, dtype=torch.float32)
    args = _Args(
        b, z, d, g,
        s.data_ptr(), s_next.data_ptr(), buffers[0], buffers[1],
        losses.data_ptr(), best.data_ptr(), probs.data_ptr(), scratch.data_ptr(),
    )  # fmt: skip
    if lib.lpn_step(ctypes.byref(args)) != 0:
        raise RuntimeError(f"lpn_step: bad sizes B={b} Z={z} d={d} G={g}")
    return losses, best, probs
