from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from rim_cells import RIMCell


def make_cell(
    rnn_cell: Any = "LSTM", activation: Any = "null_attention", dtype=torch.float64, **kw: Any
):
    torch.manual_seed(0)
    defaults: dict[str, Any] = dict(
        input_key_size=8,
        input_value_size=12,
        input_query_size=8,
        num_input_heads=2,
        comm_key_size=4,
        comm_query_size=4,
        num_comm_heads=2,
    )
    defaults.update(kw)
    cell = RIMCell(None, 5, 6, 4, 2, rnn_cell, activation=activation, **defaults).to(dtype)
    # Larger weights than the 0.01 init so that selections and attention are not uniform.
    with torch.no_grad():
        for name, p in cell.named_parameters():
            if "weight" in name and p.dim() == 3 and "cell" not in name:
                p.mul_(30.0)
    return cell.eval()


def reference_step(cell: RIMCell, x, h, c):
    """A literal, unoptimised transcription of the RIM step (spec section 3).

    Step 6 (no gradient into inactive units' fresh states) is included as a ``where``.
    """
    b, n = h.shape[0], cell.num_units
    heads, d_k, d_v = cell.num_input_heads, cell.input_key_size, cell.input_value_size
    slots = torch.stack([x, torch.zeros_like(x)], dim=1)  # (B, 2, I): real, null
    keys = cell.input_key(slots).view(b, 2, heads, d_k).transpose(1, 2)
    values = cell.input_value(slots).view(b, 2, heads, d_v).mean(2)  # (B, 2, d_v)
    queries = cell.input_query(h).view(b, n, heads, d_k).transpose(1, 2)
    scores = (queries @ keys.transpose(-1, -2) / math.sqrt(d_k)).mean(1)  # (B, N, 2)
    probs = torch.softmax(scores, dim=-1)
    if cell.activation == "raw_score":
        chosen = torch.topk(scores[..., 0], cell.k, dim=-1).indices
    else:
        chosen = torch.topk(-probs[..., 1], cell.k, dim=-1).indices
    mask = torch.zeros(b, n, dtype=x.dtype).scatter(1, chosen, 1.0)
    read = (probs @ values) * mask.unsqueeze(-1)
    if c is not None:
        h_cell, c_cell = cell.cell(read, h, c)
    else:
        h_cell, c_cell = cell.cell(read, h), None
    h_cell = torch.where(mask.bool().unsqueeze(-1), h_cell, h_cell.detach())
    hc, dk, dv = cell.num_comm_heads, cell.comm_key_size, cell.comm_value_size
    qkv = cell.comm_qkv(h_cell)
    q = qkv[..., : hc * dk].reshape(b, n, hc, dk).transpose(1, 2)
    k = qkv[..., hc * dk : 2 * hc * dk].reshape(b, n, hc, dk).transpose(1, 2)
    v = qkv[..., 2 * hc * dk :].reshape(b, n, hc, dv).transpose(1, 2)
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dk), dim=-1)
    att = att * mask[:, None, :, None]
    ctx = (att @ v).transpose(1, 2).reshape(b, n, hc * dv)
    h_new = cell.comm_out(ctx) + h_cell
    m = mask.unsqueeze(-1)
    h_out = m * h_new + (1 - m) * h
    c_out = m * c_cell + (1 - m) * c if c is not None and c_cell is not None else None
    return h_out, c_out, mask.bool(), probs[..., 0], att


@pytest.mark.parametrize("rnn_cell", ["LSTM", "GRU"])
@pytest.mark.parametrize("activation", ["null_attention", "raw_score"])
def test_step_matches_literal_reference(rnn_cell, activation):
    cell = make_cell(rnn_cell, activation)
    torch.manual_seed(1)
    x = torch.randn(7, 5, dtype=torch.float64)
    h = torch.randn(7, 4, 6, dtype=torch.float64)
    c = torch.randn(7, 4, 6, dtype=torch.float64) if rnn_cell == "LSTM" else None
    h_out, c_out, info = cell(x.unsqueeze(1), h, c, return_info=True)
    h_ref, c_ref, mask, p_real, att = reference_step(cell, x, h, c)
    assert torch.equal(info.mask, mask)
    torch.testing.assert_close(h_out, h_ref)
    torch.testing.assert_close(info.input_attention, p_real)
    torch.testing.assert_close(info.comm_attention, att)
    if rnn_cell == "LSTM":
        torch.testing.assert_close(c_out, c_ref)
    else:
        assert c_out is None


@pytest.mark.parametrize("rnn_cell", ["LSTM", "GRU"])
def test_sequence_gradients_match_literal_reference(rnn_cell):
    """Every parameter and initial-state gradient over 3 steps equals a plain-autograd unroll
    of the literal reference (the fast path uses hand-written backward passes)."""
    cell = make_cell(rnn_cell)
    torch.manual_seed(5)
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    h0 = torch.randn(6, 4, 6, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(6, 4, 6, dtype=torch.float64, requires_grad=True)
    c_in = c0 if rnn_cell == "LSTM" else None
    weights = torch.randn(3, 6, 4, 6, dtype=torch.float64)
    named = [(n, p) for n, p in cell.named_parameters() if n != "input_key.bias"]
    inputs = [p for _, p in named] + [h0] + ([c0] if c_in is not None else [])

    out, _, c_last, _ = cell.forward_sequence(x, h0, c_in)
    loss = (out * weights).sum() + (c_last.sum() if c_last is not None else 0.0)
    fast = torch.autograd.grad(loss, inputs)

    h, c = h0, c_in
    ref_loss = torch.zeros((), dtype=torch.float64)
    for t in range(3):
        h, c, _, _, _ = reference_step(cell, x[t], h, c)
        ref_loss = ref_loss + (h * weights[t]).sum()
    if c is not None:
        ref_loss = ref_loss + c.sum()
    ref = torch.autograd.grad(ref_loss, inputs)
    names = [n for n, _ in named] + ["h0", "c0"]
    for name, a, b in zip(names, fast, ref, strict=False):
        assert torch.count_nonzero(b) > 0, name
        torch.testing.assert_close(a, b, msg=name)


def test_activation_rules_differ_somewhere():
    torch.manual_seed(3)
    a = make_cell(activation="null_attention")
    b = make_cell(activation="raw_score")
    x = torch.randn(256, 1, 5, dtype=torch.float64)
    h = torch.randn(256, 4, 6, dtype=torch.float64)
    c = torch.zeros_like(h)
    ma = a(x, h, c, return_info=True)[2].mask
    mb = b(x, h, c, return_info=True)[2].mask
    differ = (ma != mb).any(-1).float().mean().item()
    assert 0.0 < differ < 1.0


@pytest.mark.parametrize("rnn_cell", ["LSTM", "GRU"])
def test_exactly_k_active_and_inactive_states_bit_identical(rnn_cell):
    cell = make_cell(rnn_cell, dtype=torch.float32).train()  # dropout on: still exact
    torch.manual_seed(2)
    x = torch.randn(16, 1, 5)
    h = torch.randn(16, 4, 6)
    c = torch.randn(16, 4, 6) if rnn_cell == "LSTM" else None
    h_out, c_out, info = cell(x, h, c, return_info=True)
    assert info.mask.shape == (16, 4)
    assert (info.mask.sum(-1) == cell.k).all()
    inactive = ~info.mask
    assert torch.equal(h_out[inactive], h[inactive])
    assert not torch.equal(h_out[info.mask], h[info.mask])
    if c is not None:
        assert c_out is not None
        assert torch.equal(c_out[inactive], c[inactive])


def test_zero_gradient_into_inactive_units_cell_and_query_weights():
    cell = make_cell("LSTM", dtype=torch.float32).train()
    torch.manual_seed(4)
    x = torch.randn(1, 1, 5)
    h = torch.randn(1, 4, 6)
    c = torch.randn(1, 4, 6)
    h_out, c_out, info = cell(x, h, c, return_info=True)
    (h_out.sum() + c_out.sum()).backward()
    inactive = (~info.mask[0]).nonzero().flatten().tolist()
    active = info.mask[0].nonzero().flatten().tolist()
    assert len(inactive) == 2
    for name in ("cell.weight_ih", "cell.weight_hh", "input_query.weight"):
        grad = cell.get_parameter(name).grad
        assert grad is not None
        for n in inactive:
            assert torch.count_nonzero(grad[n]) == 0, (name, n)
        for n in active:
            assert torch.count_nonzero(grad[n]) > 0, (name, n)
    # inactive units are still read by active ones through communication keys/values
    qkv_grad = cell.comm_qkv.weight.grad
    assert qkv_grad is not None
    keys_values = qkv_grad[:, :, cell.num_comm_heads * cell.comm_key_size :]
    for n in inactive:
        assert torch.count_nonzero(keys_values[n]) > 0


def test_all_trainable_parameters_get_gradients_over_a_sequence():
    cell = make_cell("LSTM", dtype=torch.float32).train()
    x = torch.randn(6, 3, 5)
    out, _h, _c, _ = cell.forward_sequence(x)
    out.sum().backward()
    for name, p in cell.named_parameters():
        if name == "input_key.bias":
            # The shared key bias adds the same q.b to the real and the null score; the
            # two-slot softmax cancels it, so it never gets a gradient (as in the original).
            assert p.grad is None or torch.count_nonzero(p.grad) == 0
            continue
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert torch.count_nonzero(p.grad) > 0, name


@pytest.mark.parametrize("reverse", [False, True])
def test_sequence_equals_manual_stepping(reverse):
    cell = make_cell("LSTM")
    x = torch.randn(5, 3, 5, dtype=torch.float64)
    out, h, c, info = cell.forward_sequence(x, reverse=reverse, return_info=True)
    assert out.shape == (5, 3, 4, 6)
    assert info is not None
    assert info.mask.shape == (5, 3, 4)
    assert info.comm_attention.shape == (5, 3, 2, 4, 4)
    hs, cs = cell.initial_state(3, like=x)
    order = range(4, -1, -1) if reverse else range(5)
    for t in order:
        hs, cs = cell(x[t], hs, cs)
        torch.testing.assert_close(out[t], hs)
    torch.testing.assert_close(h, hs)
    torch.testing.assert_close(c, cs)


def test_k_equals_n_all_units_update():
    torch.manual_seed(0)
    cell = RIMCell(None, 5, 6, 4, 4, "GRU").eval()
    _, _, info = cell(torch.randn(3, 5), return_info=True)
    assert info.mask.all()


def test_deterministic_with_zero_states_and_eval():
    cell = make_cell("LSTM", dtype=torch.float32)
    x = torch.randn(4, 2, 5)
    a = cell.forward_sequence(x)[0]
    b = cell.forward_sequence(x)[0]
    assert torch.equal(a, b)


def test_save_load_round_trip(tmp_path):
    cell = make_cell("GRU", dtype=torch.float32)
    torch.save(cell.state_dict(), tmp_path / "cell.pt")
    other = RIMCell(None, 5, 6, 4, 2, "GRU", 8, 12, 8, 2, 0.1, 4, None, 4, 2).eval()
    other.load_state_dict(torch.load(tmp_path / "cell.pt", weights_only=True))
    x = torch.randn(4, 2, 5)
    assert torch.equal(cell.forward_sequence(x)[0], other.forward_sequence(x)[0])


def test_readme_constructor_and_parameter_count():
    cell = RIMCell(torch.device("cpu"), 32, 64, 6, 4, "LSTM")
    assert sum(p.numel() for p in cell.parameters()) == 1_047_504
    gru = RIMCell(torch.device("cpu"), 32, 64, 6, 4, "GRU")
    assert sum(p.numel() for p in gru.parameters()) == 869_328


def test_readme_loop_example_runs_as_written():
    timesteps, batch_size, num_units, k, input_size, hidden_size = 5, 3, 6, 4, 32, 64
    rim_model = RIMCell(torch.device("cpu"), input_size, hidden_size, num_units, k, "LSTM")
    hs = torch.randn(batch_size, num_units, hidden_size)
    cs = torch.randn(batch_size, num_units, hidden_size)
    xs = torch.randn(batch_size, timesteps, input_size)
    xs = torch.split(xs, 1, 1)
    for x in xs:
        hs, cs = rim_model(x, hs, cs)
    assert hs.shape == cs.shape == (batch_size, num_units, hidden_size)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(input_query_size=32), "input_query_size"),
        (dict(comm_query_size=8), "comm_query_size"),
        (dict(k=7), "1 <= k <= num_units"),
        (dict(rnn_cell="RNN"), "rnn_cell"),
        (dict(activation="max"), "activation"),
        (dict(input_dropout=1.0), "input_dropout"),
    ],
)
def test_constructor_validation(kwargs, match):
    args: dict[str, Any] = dict(device=None, input_size=4, hidden_size=8, num_units=6, k=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        RIMCell(**args)


def test_bad_shapes_have_clear_errors():
    cell = RIMCell(None, 4, 8, 3, 2)
    with pytest.raises(ValueError, match=r"\(batch, 1, 4\)"):
        cell(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="hs must be"):
        cell(torch.randn(2, 4), torch.randn(2, 8, 3))
    gru = RIMCell(None, 4, 8, 3, 2, "GRU")
    with pytest.raises(ValueError, match="no cell state"):
        gru(torch.randn(2, 4), torch.zeros(2, 3, 8), torch.zeros(2, 3, 8))


def test_explicit_comm_value_size_is_honoured():
    cell = RIMCell(None, 4, 8, 3, 2, comm_value_size=5, num_comm_heads=2)
    assert cell.comm_out.weight.shape == (3, 10, 8)
    h, _c = cell(torch.randn(2, 4))
    assert h.shape == (2, 3, 8)


@pytest.mark.parametrize("rnn_cell", ["LSTM", "GRU"])
def test_a_partial_backward_leaves_no_stale_weight_gradients(rnn_cell):
    """``autograd.grad`` for the initial state alone (which never reaches the weights) must
    not leave deferred weight-gradient factors behind for the next backward pass."""
    cell = make_cell(rnn_cell)
    torch.manual_seed(6)
    x = torch.randn(3, 5, 5, dtype=torch.float64)
    h0 = torch.randn(5, 4, 6, dtype=torch.float64, requires_grad=True)

    def weight_grads(partial: bool) -> list[torch.Tensor]:
        cell.zero_grad()
        out = cell.forward_sequence(x, h0)[0]
        if partial:
            torch.autograd.grad(out.sum(), h0, retain_graph=True)
        out.sum().backward()
        return [p.grad.clone() for p in cell.parameters() if p.grad is not None]

    clean, after_partial = weight_grads(False), weight_grads(True)
    assert len(clean) == len(after_partial) > 0
    for a, b in zip(clean, after_partial, strict=True):
        torch.testing.assert_close(a, b)
