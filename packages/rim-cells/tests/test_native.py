"""The native RIM kernels (``rim_lstm.c``) against the PyTorch path."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from compkit_utils import native, testing
from rim_cells import RIM, RIMCell, _native

needs_native = testing.needs_native(_native.native_library)


@needs_native
def test_argument_structs_match_the_c_side():
    lib = _native.native_library()
    assert lib is not None
    native.check_layout(lib, "rim_lstm_layout", [_native._FwdArgs, _native._BwdArgs])
    assert native.struct_layout(_native._FwdArgs)[0] == 13 * 8 + 23 * 8
    with pytest.raises(RuntimeError, match="differ from the ctypes ones"):
        native.check_layout(lib, "rim_lstm_layout", [_native._FwdArgs])


def test_kernel_gate_order_swaps_the_output_and_cell_blocks():
    """The group cell stores [i | f | o | g]; the kernels take torch's [i | f | g | o]."""
    blocks = torch.arange(4.0).repeat_interleave(3).view(1, 12)  # blocks 0, 1, 2, 3
    swapped = _native._kernel_gate_order(blocks)
    assert swapped.view(4, 3)[:, 0].tolist() == [0.0, 1.0, 3.0, 2.0]
    assert torch.equal(_native._kernel_gate_order(swapped), blocks)  # its own inverse


@pytest.fixture
def backend():
    yield _native.set_backend
    _native.set_backend("auto")


def _cell(activation: Any = "null_attention", odd: bool = True) -> RIMCell:
    torch.manual_seed(0)
    if odd:  # widths that are not multiples of the kernels' vector blocks
        cell = RIMCell(
            None, 5, 6, 4, 2, "LSTM", input_key_size=8, input_value_size=12,
            input_query_size=8, num_input_heads=2, comm_key_size=4, comm_query_size=4,
            num_comm_heads=2, activation=activation,
        )  # fmt: skip
    else:  # the README/bench size
        cell = RIMCell(None, 32, 64, 6, 4, "LSTM", activation=activation)
    with torch.no_grad():  # larger weights: selections and attention far from uniform
        for name, p in cell.named_parameters():
            if p.dim() == 3 and "cell" not in name:
                p.mul_(10.0)
    return cell


def _run(cell: RIMCell, train: bool, reverse: bool, steps: int = 9, batch: int = 19):
    cell.train(train)
    gen = torch.Generator().manual_seed(1)
    size, n, hid = cell.input_size, cell.num_units, cell.hidden_size
    x = torch.randn(steps, batch, size, generator=gen).requires_grad_()
    h0 = torch.randn(batch, n, hid, generator=gen).requires_grad_()
    c0 = torch.randn(batch, n, hid, generator=gen).requires_grad_()
    weights = torch.randn(steps, batch, n, hid, generator=gen)
    torch.manual_seed(2)  # dropout draws
    out, h, c, info = cell.forward_sequence(x, h0, c0, reverse=reverse, return_info=True)
    assert c is not None
    assert info is not None
    loss = (out * weights).sum() + (h**2).sum() + 0.5 * c.sum()
    named = [(k, p) for k, p in cell.named_parameters() if k != "input_key.bias"]
    grads = torch.autograd.grad(loss, [p for _, p in named] + [x, h0, c0])
    names = [k for k, _ in named] + ["x", "h0", "c0"]
    return (out, h, c, info), dict(zip(names, grads, strict=True))


@needs_native
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("activation", ["null_attention", "raw_score"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("odd", [True, False], ids=["odd", "bench"])
def test_native_matches_the_pytorch_path(backend, train, activation, reverse, odd):
    """Values, step info and every gradient agree; train mode includes both dropouts."""
    backend("torch")
    (ref, ref_grads) = _run(_cell(activation, odd), train, reverse)
    backend("native")
    (got, got_grads) = _run(_cell(activation, odd), train, reverse)
    assert torch.equal(got[3].mask, ref[3].mask)
    for a, b in zip(got[:3], ref[:3], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[3].input_attention, ref[3].input_attention)
    torch.testing.assert_close(got[3].comm_attention, ref[3].comm_attention)
    for name, grad in ref_grads.items():
        assert torch.count_nonzero(grad) > 0, name
        scale = grad.abs().max()
        torch.testing.assert_close(got_grads[name] / scale, grad / scale, rtol=0, atol=2e-5)


@needs_native
def test_native_inactive_units_bit_identical_and_gradient_blocked(backend):
    backend("native")
    cell = _cell().train()
    torch.manual_seed(3)
    x = torch.randn(1, 16, 5)
    h = torch.randn(16, 4, 6)
    c = torch.randn(16, 4, 6)
    _out, h_out, c_out, info = cell.forward_sequence(x, h, c, return_info=True)
    assert c_out is not None
    assert info is not None
    mask = info.mask[0]
    assert (mask.sum(-1) == cell.k).all()
    assert torch.equal(h_out[~mask], h[~mask])
    assert torch.equal(c_out[~mask], c[~mask])
    assert not torch.equal(h_out[mask], h[mask])
    # one row: zero gradient into inactive units' cell and input-query weights
    cell.zero_grad()
    _, h_one, c_one, info_one = cell.forward_sequence(x[:, :1], h[:1], c[:1], return_info=True)
    assert c_one is not None
    assert info_one is not None
    (h_one.sum() + c_one.sum()).backward()
    active = info_one.mask[0, 0]
    for name in ("cell.weight_ih", "cell.weight_hh", "input_query.weight"):
        grad = cell.get_parameter(name).grad
        assert grad is not None
        assert all(torch.count_nonzero(grad[n]) == 0 for n in (~active).nonzero().flatten())
        assert all(torch.count_nonzero(grad[n]) > 0 for n in active.nonzero().flatten())


@needs_native
def test_native_results_do_not_depend_on_threads_or_saving(backend):
    """Bit-identical across thread counts, and inference (no saved tensors) equals training."""
    backend("native")
    cell = _cell(odd=False).eval()
    x = torch.randn(7, 40, 32, generator=torch.Generator().manual_seed(4))
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            xr = x.clone().requires_grad_()
            out = cell.forward_sequence(xr)[0]
            (grad,) = torch.autograd.grad(out.square().sum(), xr)
            results.append((out.detach(), grad))
            with torch.no_grad():
                assert torch.equal(cell.forward_sequence(x)[0], out.detach())
    finally:
        torch.set_num_threads(before)
    for out, grad in results[1:]:
        assert torch.equal(out, results[0][0])
        assert torch.equal(grad, results[0][1])


@needs_native
def test_native_seeded_training_is_deterministic_and_follows_the_pytorch_path(backend):
    """A bidirectional 2-layer RIM in train mode (dropout on): the native path repeats
    itself exactly and tracks the PyTorch path's losses."""

    def train_once() -> list[float]:
        torch.manual_seed(0)
        rim = RIM(None, 8, 32, 4, 2, "LSTM", 2, True, batch_first=True)
        opt = torch.optim.Adam(rim.parameters(), lr=1e-3)
        x = torch.randn(6, 11, 8)
        losses = []
        for _ in range(5):
            loss = rim(x)[0].square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    backend("native")
    first = train_once()
    assert first == train_once()
    assert first[-1] < 0.5 * first[0]
    backend("torch")
    assert first == pytest.approx(train_once(), rel=1e-4)


def test_backend_selection(backend):
    with pytest.raises(ValueError, match="backend must be one of"):
        backend("fast")
    gru = RIMCell(None, 4, 8, 3, 2, "GRU")
    x = torch.zeros(2, 3, 4)
    assert _native.active_backend(gru, x) == "torch"  # GRU units: always PyTorch
    lstm = RIMCell(None, 4, 8, 3, 2, "LSTM")
    assert _native.active_backend(lstm, x.double()) == "torch"
    backend("torch")
    assert _native.active_backend(lstm, x) == "torch"
    backend("auto")
    expected = "native" if _native.native_library() is not None else "torch"
    assert _native.active_backend(lstm, x) == expected
