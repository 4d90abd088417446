from __future__ import annotations

import pytest
import torch

from compile_seg.lstm import masked_lstm


def _reference(x, w, cell, steps):
    steps_total, batch, _ = x.shape
    h = torch.zeros(batch, cell.hidden_size, dtype=x.dtype)
    c = torch.zeros_like(h)
    out = []
    for t in range(steps_total):
        if t >= steps:
            out.append(torch.zeros_like(h))
            continue
        h, c = cell(x[t], (h, c))
        if w is not None:
            h = h * w[t].unsqueeze(1)
            c = c * w[t].unsqueeze(1)
        out.append(h)
    return torch.stack(out)


def _ours(cell_params, x, w, steps):
    w_ih, w_hh, b_ih, b_hh = cell_params
    hidden = w_hh.shape[1]
    scale = torch.ones(4 * hidden, dtype=x.dtype)
    scale[2 * hidden : 3 * hidden] = 2.0
    xs = (x @ w_ih.t() + b_ih + b_hh) * scale
    return masked_lstm(xs, w, w_hh * scale.unsqueeze(1), steps)


@pytest.mark.parametrize("use_mask", [True, False])
@pytest.mark.parametrize("steps", [9, 6])
def test_matches_lstm_cell_loop_values_and_gradients(use_mask, steps):
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(8, 8)
    x = torch.randn(9, 6, 8, requires_grad=True)
    w = torch.rand(9, 6, requires_grad=True) if use_mask else None
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    ours = _ours(params, x, w, steps)
    ref = _reference(x, w, cell, steps)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    grad = torch.randn_like(ours)
    inputs = [x] + ([w] if w is not None else [])
    g_ours = torch.autograd.grad(ours, inputs + params, grad)
    g_ref = torch.autograd.grad(ref, inputs + list(cell.parameters()), grad)
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_gradcheck_float64():
    torch.manual_seed(1)
    cell = torch.nn.LSTMCell(3, 3).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.rand(5, 2, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    assert torch.autograd.gradcheck(lambda x, w, *p: _ours(p, x, w, 4), (x, w, *params))


def test_zero_mask_wipes_the_state():
    torch.manual_seed(2)
    cell = torch.nn.LSTMCell(4, 4)
    x = torch.randn(6, 3, 4)
    w = torch.ones(6, 3)
    w[2] = 0.0
    params = [p.detach() for p in cell.parameters()]
    full = _ours(params, x, w, 6)
    restarted = _ours(params, x[3:], None, 3)
    assert (full[2] == 0).all()
    torch.testing.assert_close(full[3:], restarted, atol=1e-6, rtol=1e-5)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="masked_lstm"):
        masked_lstm(torch.zeros(3, 2, 8), torch.zeros(2, 3), torch.zeros(8, 2))
