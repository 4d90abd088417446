"""Group layers: N independent linear maps / recurrent cells computed as one batched op.

Every class here keeps one weight block per unit (``num_units`` = N, the paper's K_t) and
evaluates all units with a single batched matrix product instead of a Python loop over
units. Inputs and outputs are *batch-major*, ``(batch, num_units, features)``, like the
original implementation; the RIM modules use the ``*_unit_major`` helpers internally to
avoid transposes inside the time loop.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["GroupGRUCell", "GroupLSTMCell", "GroupLinear"]


def _check_group_input(x: Tensor, num_units: int, features: int, name: str) -> None:
    if x.dim() != 3 or x.shape[1] != num_units or x.shape[2] != features:
        raise ValueError(
            f"{name}: expected shape (batch, {num_units}, {features}), got {tuple(x.shape)}"
        )


class GroupLinear(nn.Module):
    """N independent bias-free linear maps, one per unit.

    Unit ``n`` multiplies its slice of the input by its own matrix ``weight[n]``.

    Args:
        in_features: input features per unit (d_in).
        out_features: output features per unit (d_out).
        num_units: number of units N.

    Shapes:
        ``x``: ``(batch, num_units, in_features)`` → ``(batch, num_units, out_features)``.

    Attributes:
        weight: ``(num_units, in_features, out_features)``, initialised as 0.01·N(0, 1)
            (the original's initialisation).
    """

    def __init__(self, in_features: int, out_features: int, num_units: int) -> None:
        super().__init__()
        if min(in_features, out_features, num_units) < 1:
            raise ValueError("GroupLinear: in_features, out_features, num_units must be >= 1")
        self.in_features = in_features
        self.out_features = out_features
        self.num_units = num_units
        self.weight = nn.Parameter(torch.empty(num_units, in_features, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw the weights as 0.01·N(0, 1)."""
        with torch.no_grad():
            self.weight.normal_(0.0, 1.0).mul_(0.01)

    def forward(self, x: Tensor) -> Tensor:
        _check_group_input(x, self.num_units, self.in_features, "GroupLinear")
        return torch.bmm(x.transpose(0, 1), self.weight).transpose(0, 1)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, num_units={self.num_units}"


class GroupLSTMCell(nn.Module):
    """N independent bias-free LSTM cells evaluated at once.

    For every unit ``n``: ``a = x[n] @ weight_ih[n] + h[n] @ weight_hh[n]`` (width 4H) with the
    gate layout ``[input i | forget f | output o | candidate g]`` (note: not PyTorch's
    ``i, f, g, o``); ``c' = σ(f)·c + σ(i)·tanh(g)``, ``h' = σ(o)·tanh(c')``.

    Args:
        input_size: input features per unit (d_in).
        hidden_size: hidden features per unit (H).
        num_units: number of units N.

    Shapes:
        ``x``: ``(batch, num_units, input_size)``; ``h``, ``c``:
        ``(batch, num_units, hidden_size)`` → ``(h', c')`` of the same shape as ``h``.

    Attributes:
        weight_ih: ``(num_units, input_size, 4·hidden_size)``.
        weight_hh: ``(num_units, hidden_size, 4·hidden_size)``; both initialised
            U(−1/√H, 1/√H).
    """

    gates: int = 4

    def __init__(self, input_size: int, hidden_size: int, num_units: int) -> None:
        super().__init__()
        if min(input_size, hidden_size, num_units) < 1:
            raise ValueError(f"{type(self).__name__}: all sizes must be >= 1")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_units = num_units
        width = self.gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(num_units, input_size, width))
        self.weight_hh = nn.Parameter(torch.empty(num_units, hidden_size, width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw every weight from U(−1/√H, 1/√H)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            self.weight_ih.uniform_(-bound, bound)
            self.weight_hh.uniform_(-bound, bound)

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        _check_group_input(x, self.num_units, self.input_size, "GroupLSTMCell x")
        _check_group_input(h, self.num_units, self.hidden_size, "GroupLSTMCell h")
        _check_group_input(c, self.num_units, self.hidden_size, "GroupLSTMCell c")
        gx = torch.bmm(x.transpose(0, 1), self.weight_ih)
        h_new, c_new = lstm_unit_major(gx, h.transpose(0, 1), c.transpose(0, 1), self.weight_hh)
        return h_new.transpose(0, 1), c_new.transpose(0, 1)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, num_units={self.num_units}"


class GroupGRUCell(nn.Module):
    """N independent bias-free GRU cells evaluated at once.

    With ``x[n] @ weight_ih[n]`` split into ``(x_r, x_z, x_n)`` and ``h[n] @ weight_hh[n]``
    into ``(h_r, h_z, h_n)``: ``r = σ(x_r + h_r)``, ``z = σ(x_z + h_z)``,
    ``n = tanh(x_n + r·h_n)``, ``h' = (1 − z)·n + z·h`` (PyTorch's GRU without biases).

    Args:
        input_size: input features per unit (d_in).
        hidden_size: hidden features per unit (H).
        num_units: number of units N.
        init: ``"uniform"`` (U(−1/√H, 1/√H), default) or ``"ones"`` — every weight exactly
            1.0, reproducing the original implementation's initialisation bug (symmetric,
            saturating units); offered only for parity experiments.

    Shapes:
        ``x``: ``(batch, num_units, input_size)``; ``h``: ``(batch, num_units, hidden_size)``
        → ``h'`` of the same shape as ``h``.

    Attributes:
        weight_ih: ``(num_units, input_size, 3·hidden_size)``.
        weight_hh: ``(num_units, hidden_size, 3·hidden_size)``.
    """

    gates: int = 3

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_units: int,
        init: Literal["uniform", "ones"] = "uniform",
    ) -> None:
        super().__init__()
        if min(input_size, hidden_size, num_units) < 1:
            raise ValueError("GroupGRUCell: all sizes must be >= 1")
        if init not in ("uniform", "ones"):
            raise ValueError(f"GroupGRUCell: init must be 'uniform' or 'ones', got {init!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_units = num_units
        self.init = init
        width = self.gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(num_units, input_size, width))
        self.weight_hh = nn.Parameter(torch.empty(num_units, hidden_size, width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw the weights according to ``init``."""
        with torch.no_grad():
            if self.init == "ones":
                self.weight_ih.fill_(1.0)
                self.weight_hh.fill_(1.0)
            else:
                bound = 1.0 / math.sqrt(self.hidden_size)
                self.weight_ih.uniform_(-bound, bound)
                self.weight_hh.uniform_(-bound, bound)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        _check_group_input(x, self.num_units, self.input_size, "GroupGRUCell x")
        _check_group_input(h, self.num_units, self.hidden_size, "GroupGRUCell h")
        gx = torch.bmm(x.transpose(0, 1), self.weight_ih)
        return gru_unit_major(gx, h.transpose(0, 1), self.weight_hh).transpose(0, 1)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, num_units={self.num_units}"


def lstm_unit_major(gx: Tensor, h: Tensor, c: Tensor, weight_hh: Tensor) -> tuple[Tensor, Tensor]:
    """One grouped LSTM step in unit-major layout.

    Args:
        gx: input contribution to the gates, ``(num_units, batch, 4H)``.
        h: hidden state ``(num_units, batch, H)``.
        c: cell state ``(num_units, batch, H)``.
        weight_hh: ``(num_units, H, 4H)``.

    Returns:
        ``(h', c')``, each ``(num_units, batch, H)``.
    """
    gates = torch.baddbmm(gx, h, weight_hh)
    hidden = h.shape[-1]
    # split (not slicing): its backward is one concatenation instead of zero-filled buffers
    ifo, g = gates.split([3 * hidden, hidden], dim=-1)
    i, f, o = torch.sigmoid(ifo).chunk(3, dim=-1)
    g = torch.tanh(g)
    c_new = torch.addcmul(f * c, i, g)
    return o * torch.tanh(c_new), c_new


def gru_unit_major(gx: Tensor, h: Tensor, weight_hh: Tensor) -> Tensor:
    """One grouped GRU step in unit-major layout.

    Args:
        gx: input contribution ``(num_units, batch, 3H)`` in the order (reset, update, new).
        h: hidden state ``(num_units, batch, H)``.
        weight_hh: ``(num_units, H, 3H)``.

    Returns:
        ``h'`` of shape ``(num_units, batch, H)``.
    """
    gh = torch.bmm(h, weight_hh)
    hidden = h.shape[-1]
    gx_rz, gx_n = gx.split([2 * hidden, hidden], dim=-1)
    gh_rz, gh_n = gh.split([2 * hidden, hidden], dim=-1)
    r, z = torch.sigmoid(gx_rz + gh_rz).chunk(2, dim=-1)
    n = torch.tanh(torch.addcmul(gx_n, r, gh_n))
    return torch.lerp(n, h, z)
