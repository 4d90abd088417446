from __future__ import annotations

import pytest
import torch

from rim_cells import RIM, RIMCell


@pytest.mark.parametrize("rnn_cell", ["LSTM", "GRU"])
@pytest.mark.parametrize(
    ("layers", "bidirectional"), [(1, False), (2, False), (1, True), (4, True)]
)
@pytest.mark.parametrize("batch_first", [False, True])
def test_shapes_every_combination(rnn_cell, layers, bidirectional, batch_first):
    torch.manual_seed(0)
    t, b, n, h = 3, 2, 3, 4
    model = RIM(
        None,
        5,
        h,
        n,
        2,
        rnn_cell,
        layers,
        bidirectional,
        batch_first=batch_first,
        input_value_size=8,
        input_key_size=8,
        input_query_size=8,
    )
    d = 2 if bidirectional else 1
    x = torch.randn(b, t, 5) if batch_first else torch.randn(t, b, 5)
    result = model(x, return_info=True)
    out, h_n = result[0], result[1]
    expected = (b, t, d * n * h) if batch_first else (t, b, d * n * h)
    assert out.shape == expected
    assert h_n.shape == (layers * d, b, n * h)
    if rnn_cell == "LSTM":
        assert len(result) == 4
        assert result[2].shape == (layers * d, b, n * h)
    else:
        assert len(result) == 3
    infos = result[-1]
    assert len(infos) == layers * d
    lead = (b, t) if batch_first else (t, b)
    assert infos[0].mask.shape == (*lead, n)
    assert infos[0].input_attention.shape == (*lead, n)
    assert infos[0].comm_attention.shape[:2] == lead
    assert (infos[-1].mask.sum(-1) == 2).all()


def test_batch_first_step_info_is_the_transposed_time_first_info():
    torch.manual_seed(0)
    time_first = RIM(None, 5, 4, 3, 2).eval()
    batch_first = RIM(None, 5, 4, 3, 2, batch_first=True).eval()
    batch_first.load_state_dict(time_first.state_dict())
    x = torch.randn(3, 2, 5)  # (time, batch, features)
    with torch.no_grad():
        info_t = time_first(x, return_info=True)[-1][0]
        info_b = batch_first(x.transpose(0, 1), return_info=True)[-1][0]
    for a, b in zip(info_t, info_b, strict=True):
        assert torch.equal(a.transpose(0, 1), b)


def test_readme_example_runs_as_written():
    rim_model = RIM("cpu", 16, 24, 6, 4, "LSTM", 4, True)
    x = torch.randn(7, 4, 16)
    out, h, c = rim_model(x)
    assert out.shape == (7, 4, 288)
    assert h.shape == c.shape == (8, 4, 144)


def test_bidirectional_layer_matches_its_cells():
    torch.manual_seed(0)
    model = RIM(None, 5, 4, 3, 2, "LSTM", 1, True).eval()
    x = torch.randn(6, 2, 5)
    out, h, _c = model(x)
    forward, backward = model.cells
    assert isinstance(forward, RIMCell)
    assert isinstance(backward, RIMCell)
    f_out, _f_h, _, _ = forward.forward_sequence(x)
    b_out, b_h, _, _ = backward.forward_sequence(x, reverse=True)
    torch.testing.assert_close(out[..., :12], f_out.reshape(6, 2, 12))
    torch.testing.assert_close(out[..., 12:], b_out.reshape(6, 2, 12))
    torch.testing.assert_close(h[1], b_h.reshape(2, 12))
    # the backward direction's final state is the one after reading x[0]
    torch.testing.assert_close(out[0, :, 12:], h[1])


def test_given_states_are_used_and_zero_default_is_deterministic():
    torch.manual_seed(0)
    model = RIM(None, 5, 4, 3, 2, "GRU", 2, False).eval()
    x = torch.randn(4, 2, 5)
    out1, _ = model(x)
    out2, _ = model(x, torch.zeros(2, 2, 12))
    assert torch.equal(out1, out2)
    out3, _ = model(x, torch.ones(2, 2, 12))
    assert not torch.equal(out1, out3)


def test_random_initial_state_parity_option():
    model = RIM(None, 5, 4, 3, 2, "LSTM", init_state="random").eval()
    x = torch.randn(4, 2, 5)
    assert not torch.equal(model(x)[0], model(x)[0])


def test_state_shape_errors_mention_batch_first():
    model = RIM(None, 5, 4, 3, 2, "LSTM")
    x = torch.randn(2, 7, 5)  # batch-first data given to a sequence-first model
    with pytest.raises(ValueError, match="batch_first=True"):
        model(x, torch.zeros(1, 2, 12), torch.zeros(1, 2, 12))
    with pytest.raises(ValueError, match="5 features"):
        model(torch.randn(2, 7, 6))


def test_non_contiguous_states_are_accepted():
    model = RIM(None, 5, 4, 3, 2, "LSTM", 2).eval()
    h = torch.randn(2, 2, 12).transpose(0, 1).contiguous().transpose(0, 1)
    out, _, _ = model(torch.randn(3, 2, 5), h, h)
    assert out.shape == (3, 2, 12)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = RIM(None, 5, 4, 3, 2, "LSTM", 2, True, activation="raw_score").eval()
    torch.save(model.state_dict(), tmp_path / "rim.pt")
    torch.manual_seed(1)
    other = RIM(None, 5, 4, 3, 2, "LSTM", 2, True, activation="raw_score").eval()
    other.load_state_dict(torch.load(tmp_path / "rim.pt", weights_only=True))
    x = torch.randn(4, 2, 5)
    assert torch.equal(model(x)[0], other(x)[0])


def test_gradients_flow_through_layers():
    model = RIM(None, 5, 4, 3, 2, "GRU", 2, True)
    out, _ = model(torch.randn(4, 2, 5))
    out.sum().backward()
    for name, p in model.named_parameters():
        if name.endswith("input_key.bias"):
            continue
        assert p.grad is not None, name


def test_to_changes_dtype_of_every_tensor():
    model = RIM(None, 5, 4, 3, 2, "LSTM", 2, True).to(torch.float64)
    out, h, _c = model(torch.randn(3, 2, 5, dtype=torch.float64))
    assert out.dtype == h.dtype == torch.float64
