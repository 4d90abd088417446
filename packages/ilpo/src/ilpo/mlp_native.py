"""Native (C) training loop of the baselines' classifiers (internal; see ``mlp_train.c``).

BC with the original's settings is 1,000 epochs of 1,563 Adam steps per seed, and BCO(α)
20 iterations of 10,000 + 10,000 steps: at batch 32 each step is a few million
multiply-adds, so as PyTorch ops (about 25 dispatched ops forward, backward and update) the
dispatch costs as much as the arithmetic. ``mlp_train.c`` runs a whole list of minibatches
per call: forward pass, mean cross-entropy, hand-written backward pass and the Adam update
of :class:`ilpo.lpn.FlatAdam`'s flat buffers. It is compiled on first use by
:mod:`compkit_utils.native` (cached) and used automatically for float32 CPU models trained
with a ``FlatAdam`` over exactly their parameters; anything else, and a machine without a C
compiler, takes the PyTorch path (``baselines._ce_step`` per minibatch). Both compute the
same function (tested to float32 rounding); they differ in the last bits, so a seeded run
reproduces exactly on one path.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.resources
import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from compkit_utils.native import KernelSwitch, check_layout, common_source, load_library

if TYPE_CHECKING:
    from torch import nn

    from ilpo.lpn import FlatAdam

__all__ = ["MAX_LAYERS", "SWITCH", "native_library", "native_train", "set_backend"]

_I64, _PTR, _F64 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_double
MAX_LAYERS = 8
"""Most Linear layers the kernel takes (``MLP_MAX_LAYERS`` in ``mlp_train.c``)."""


class _Args(ctypes.Structure):
    """``mlp_args`` of ``mlp_train.c``."""

    _fields_ = (
        [(name, _I64) for name in ("L", "batch", "n_idx", "n_rows", "t0")]
        + [(name, _PTR) for name in ("sizes", "x", "y", "idx")]
        + [(name, _PTR) for name in ("params", "grads", "exp_avg", "exp_avg_sq")]
        + [(name, _F64) for name in ("lr", "beta1", "beta2", "eps")]
        + [(name, _PTR) for name in ("losses", "scratch")]
    )


@functools.cache
def native_library() -> ctypes.CDLL | None:
    """The compiled ``mlp_train.c``, or ``None`` when native kernels are unavailable."""
    source = importlib.resources.files("ilpo").joinpath("mlp_train.c").read_text()
    lib = load_library("ilpo_mlp_train", common_source() + source)
    if lib is None:
        return None
    check_layout(lib, "mlp_layout", [_Args])
    lib.mlp_train.argtypes = [ctypes.POINTER(_Args)]
    lib.mlp_train.restype = ctypes.c_int
    lib.mlp_scratch_floats.argtypes = [_I64, _PTR, _I64]
    lib.mlp_scratch_floats.restype = _I64
    lib.mlp_param_count.argtypes = [_I64, _PTR]
    lib.mlp_param_count.restype = _I64
    return lib


SWITCH = KernelSwitch("MLP", native_library)
"""The kernel switch: ``SWITCH.set("torch")`` forces the PyTorch path (tests, benchmarks)."""


def set_backend(name: str) -> None:
    """``"auto"`` (default), ``"torch"`` or ``"native"`` for the BC/BCO training steps."""
    SWITCH.set(name)


def _layer_sizes(model: nn.Module, opt: FlatAdam) -> list[int] | None:
    """``[inputs, widths..., classes]`` when the kernel applies to ``model`` and ``opt``.

    The model must be a chain of ``nn.Linear`` layers in ``model.layers`` (ilpo's
    :class:`~ilpo.baselines.MLP`), float32 on the CPU, and ``opt`` a ``FlatAdam`` over
    exactly its parameters in order (so the flat buffers hold them back to back).
    """
    from torch import nn

    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not 1 <= len(layers) <= MAX_LAYERS:
        return None
    params = list(model.parameters())
    if len(params) != len(opt.params) or any(
        p is not q for p, q in zip(params, opt.params, strict=True)
    ):
        return None
    if opt.flat.dtype != torch.float32 or opt.flat.device.type != "cpu":
        return None
    sizes: list[int] = []
    for layer in layers:
        if not isinstance(layer, nn.Linear) or layer.bias is None:
            return None
        if not sizes:
            sizes.append(layer.in_features)
        if layer.in_features != sizes[-1]:
            return None
        sizes.append(layer.out_features)
    return sizes


def native_train(
    model: nn.Module, opt: FlatAdam, x: Tensor, y: Tensor, idx: Tensor, batch: int
) -> Tensor | None:
    """Adam steps on minibatches ``idx[s·batch : (s + 1)·batch]`` of ``x [N, n0]``, ``y [N]``.

    Returns the per-step mean cross-entropies ``[ceil(len(idx) / batch)]`` (the parameters
    and ``opt``'s moments and step count updated in place), or ``None`` when the kernel
    does not apply (the caller then runs the PyTorch steps).

    Raises:
        ValueError: an index or a label out of range.
    """
    if not SWITCH.native_allowed():
        return None
    sizes = _layer_sizes(model, opt)
    if (
        sizes is None
        or x.device.type != "cpu"
        or x.dtype != torch.float32
        or x.dim() != 2
        or x.shape[1] != sizes[0]
        or y.dtype != torch.int64
        or y.shape != (x.shape[0],)
        or idx.dtype != torch.int64
        or idx.dim() != 1
        or batch < 1
    ):
        return None
    lib = native_library()
    assert lib is not None  # native_allowed() checked it
    x, y, idx = x.contiguous(), y.contiguous(), idx.contiguous()
    c_sizes = torch.tensor(sizes, dtype=torch.int64)
    n_layers = len(sizes) - 1
    scratch = torch.empty(
        int(lib.mlp_scratch_floats(n_layers, c_sizes.data_ptr(), batch)), dtype=torch.float32
    )
    steps = math.ceil(len(idx) / batch)
    losses = torch.empty(steps, dtype=torch.float32)
    b1, b2 = opt.betas
    args = _Args(
        n_layers, batch, len(idx), x.shape[0], opt.steps,
        c_sizes.data_ptr(), x.data_ptr(), y.data_ptr(), idx.data_ptr(),
        opt.flat.data_ptr(), opt.grad.data_ptr(),
        opt.exp_avg.data_ptr(), opt.exp_avg_sq.data_ptr(),
        opt.lr, b1, b2, opt.eps,
        losses.data_ptr(), scratch.data_ptr(),
    )  # fmt: skip
    status = lib.mlp_train(ctypes.byref(args))
    if status == 2:
        raise ValueError(
            f"minibatch indices must lie in [0, {x.shape[0]}) and labels in [0, {sizes[-1]})"
        )
    if status != 0:
        raise RuntimeError(f"mlp_train: bad sizes {sizes} (batch {batch})")
    opt.steps += steps
    return losses
