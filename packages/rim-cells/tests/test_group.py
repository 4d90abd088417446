from __future__ import annotations

import pytest
import torch

from rim_cells import GroupGRUCell, GroupLinear, GroupLSTMCell


def test_group_linear_equals_separate_matmuls():
    torch.manual_seed(0)
    layer = GroupLinear(5, 7, 3)
    x = torch.randn(4, 3, 5)
    y = layer(x)
    assert y.shape == (4, 3, 7)
    for n in range(3):
        torch.testing.assert_close(y[:, n], x[:, n] @ layer.weight[n])


def test_group_linear_init_scale():
    torch.manual_seed(0)
    layer = GroupLinear(64, 64, 8)
    assert 0.005 < layer.weight.std().item() < 0.015


def test_group_lstm_matches_independent_torch_lstm_cells():
    torch.manual_seed(0)
    n_units, d_in, hidden = 3, 5, 4
    group = GroupLSTMCell(d_in, hidden, n_units).double()
    x = torch.randn(2, n_units, d_in, dtype=torch.float64)
    h = torch.randn(2, n_units, hidden, dtype=torch.float64)
    c = torch.randn(2, n_units, hidden, dtype=torch.float64)
    h_new, c_new = group(x, h, c)
    for n in range(n_units):
        ref = torch.nn.LSTMCell(d_in, hidden, bias=False).double()
        # ours: [i, f, o, g] as columns; torch: rows [i, f, g, o]
        wi, wf, wo, wg = group.weight_ih[n].t().chunk(4, dim=0)
        hi, hf, ho, hg = group.weight_hh[n].t().chunk(4, dim=0)
        with torch.no_grad():
            ref.weight_ih.copy_(torch.cat([wi, wf, wg, wo]))
            ref.weight_hh.copy_(torch.cat([hi, hf, hg, ho]))
        h_ref, c_ref = ref(x[:, n], (h[:, n], c[:, n]))
        torch.testing.assert_close(h_new[:, n], h_ref)
        torch.testing.assert_close(c_new[:, n], c_ref)


def test_group_gru_matches_independent_torch_gru_cells():
    torch.manual_seed(0)
    n_units, d_in, hidden = 3, 5, 4
    group = GroupGRUCell(d_in, hidden, n_units).double()
    x = torch.randn(2, n_units, d_in, dtype=torch.float64)
    h = torch.randn(2, n_units, hidden, dtype=torch.float64)
    h_new = group(x, h)
    for n in range(n_units):
        ref = torch.nn.GRUCell(d_in, hidden, bias=False).double()
        with torch.no_grad():  # torch's order is also (reset, update, new)
            ref.weight_ih.copy_(group.weight_ih[n].t())
            ref.weight_hh.copy_(group.weight_hh[n].t())
        torch.testing.assert_close(h_new[:, n], ref(x[:, n], h[:, n]))


def test_gru_init_uniform_by_default_and_ones_for_parity():
    torch.manual_seed(0)
    cell = GroupGRUCell(8, 16, 2)
    bound = 1 / 16**0.5
    assert cell.weight_ih.abs().max() <= bound
    assert cell.weight_ih.std() > 0.1 * bound  # not constant
    ones = GroupGRUCell(8, 16, 2, init="ones")
    assert torch.equal(ones.weight_hh, torch.ones_like(ones.weight_hh))


def test_group_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"expected shape \(batch, 3, 5\)"):
        GroupLinear(5, 7, 3)(torch.randn(4, 2, 5))
    with pytest.raises(ValueError, match="init must be"):
        GroupGRUCell(2, 2, 2, init="zeros")  # type: ignore[arg-type]
