from __future__ import annotations

import pytest
import torch

from rim_cells._fused import WeightTape, lstm_masked, unit_attention


def test_lstm_masked_gradcheck():
    torch.manual_seed(0)
    gates = torch.randn(3, 4, 8, dtype=torch.float64, requires_grad=True)
    c = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)
    everyone = torch.ones(3, 4, 1, dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda g, s: lstm_masked(g, s, everyone), (gates, c))
    # with a partial mask only h's gradient is blocked on purpose; c_out is exact
    active = torch.rand(3, 4, 1) > 0.4
    assert torch.autograd.gradcheck(lambda g, s: lstm_masked(g, s, active)[1], (gates, c))


def test_lstm_masked_blocks_inactive_units_and_keeps_their_cell_state():
    torch.manual_seed(1)
    gates = torch.randn(3, 4, 8, dtype=torch.float64, requires_grad=True)
    c = torch.randn(3, 4, 2, dtype=torch.float64)
    active = torch.zeros(3, 4, 1, dtype=torch.bool)
    active[0] = True
    h, c_out = lstm_masked(gates, c, active)
    assert torch.equal(c_out[1:], c[1:])
    (h.sum() + c_out.sum()).backward()
    assert gates.grad is not None
    assert torch.count_nonzero(gates.grad[1:]) == 0
    assert torch.count_nonzero(gates.grad[0]) > 0


@pytest.mark.parametrize("dropout", [False, True])
def test_unit_attention_gradcheck(dropout):
    torch.manual_seed(2)
    heads, d_k, d_v, n, b = 2, 3, 4, 5, 3
    qkv = torch.randn(n, b, heads * (2 * d_k + d_v), dtype=torch.float64, requires_grad=True)
    keep = None
    if dropout:
        keep = (torch.rand(b * heads, n, n) > 0.3).to(torch.float64) / 0.7
    assert torch.autograd.gradcheck(lambda t: unit_attention(t, heads, d_k, d_v, keep)[0], (qkv,))


def test_weight_tape_gradcheck_over_several_uses():
    torch.manual_seed(3)
    weight = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    add = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)

    def fn(w: torch.Tensor, x: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
        tape = WeightTape(w)
        y = tape.bmm(x, add)
        return tape.bmm(torch.tanh(y[..., :3]))  # second use reads the first

    assert torch.autograd.gradcheck(fn, (weight, x, add))
