"""The native single-step path of ``RIMCell.forward`` (a Python loop over steps) against the
PyTorch path: values, step info and every gradient, and the shared per-loop weights."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from compkit_utils import testing
from rim_cells import RIMCell, _native

needs_native = testing.needs_native(_native.native_library)


@pytest.fixture
def backend():
    yield _native.set_backend
    _native.set_backend("auto")


def _cell(readme_size: bool) -> RIMCell:
    torch.manual_seed(0)
    if readme_size:  # the values are projected per step (d_v = 400 > I)
        cell = RIMCell(None, 32, 64, 6, 4, "LSTM")
    else:  # odd widths; the value map is folded into the cell weight
        cell = RIMCell(
            None, 5, 6, 4, 2, "LSTM", input_key_size=8, input_value_size=12,
            input_query_size=8, num_input_heads=2, comm_key_size=4, comm_query_size=4,
            num_comm_heads=2,
        )  # fmt: skip
    with torch.no_grad():  # larger weights: selections and attention far from uniform
        for name, p in cell.named_parameters():
            if p.dim() == 3 and "cell" not in name:
                p.mul_(10.0)
    return cell


def _loop(cell: RIMCell, train: bool, steps: int = 5, batch: int = 17) -> tuple[Any, ...]:
    """Step the cell in Python; return outputs, infos and all gradients."""
    cell.train(train)
    gen = torch.Generator().manual_seed(1)
    size, n, hid = cell.input_size, cell.num_units, cell.hidden_size
    x = torch.randn(steps, batch, size, generator=gen).requires_grad_()
    h0 = torch.randn(batch, n, hid, generator=gen).requires_grad_()
    c0 = torch.randn(batch, n, hid, generator=gen).requires_grad_()
    weights = torch.randn(steps, batch, n, hid, generator=gen)
    torch.manual_seed(2)  # dropout draws
    h, c = h0, c0
    loss = torch.zeros(())
    outs, infos = [], []
    for t in range(steps):
        h, c, info = cell(x[t], h, c, return_info=True)  # type: ignore[misc]
        loss = loss + (h * weights[t]).sum()
        outs.append(h)
        infos.append(info)
    assert c is not None
    loss = loss + 0.5 * (c**2).sum()
    params = list(cell.parameters())
    grads = torch.autograd.grad(loss, [*params, x, h0, c0], allow_unused=True)
    return torch.stack(outs), c, infos, grads


@needs_native
@pytest.mark.parametrize("readme_size", [False, True])
@pytest.mark.parametrize("train", [False, True])
def test_native_steps_match_the_pytorch_path(backend, readme_size, train):
    cell = _cell(readme_size)
    got = _loop(cell, train)
    assert "_native_step_cache" in cell.__dict__  # the native step path ran
    backend("torch")
    ref = _loop(cell, train)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-4, atol=1e-5)
    for a, b in zip(got[2], ref[2], strict=True):
        assert torch.equal(a.mask, b.mask)
        torch.testing.assert_close(a.input_attention, b.input_attention, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a.comm_attention, b.comm_attention, rtol=1e-4, atol=1e-5)
    names = [k for k, _ in cell.named_parameters()] + ["x", "h0", "c0"]
    for name, a, b in zip(names, got[3], ref[3], strict=True):
        if name == "input_key.bias":  # only the raw-score rule reads the null slot's key
            assert a is None or not a.any(), name
            continue
        assert b is not None, name
        assert b.any(), name
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)


def _train(cell: RIMCell, iterations: int = 3) -> list[float]:
    """Truncated-BPTT style training: step, backward, optimizer step, repeat."""
    torch.manual_seed(3)
    opt = torch.optim.SGD(cell.parameters(), lr=0.5)
    x = torch.randn(4, 9, cell.input_size)
    losses = []
    for _ in range(iterations):
        h, c = cell.initial_state(9)
        loss = torch.zeros(())
        for t in range(4):
            h, c = cell(x[t], h, c)[:2]
            loss = loss + h.square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@needs_native
def test_parameter_updates_between_loops_are_seen(backend):
    """The shared weights are derived afresh after a backward pass and an optimizer step."""
    losses = _train(_cell(False).eval())
    backend("torch")
    ref = _train(_cell(False).eval())
    assert losses[0] != losses[-1]
    assert losses == pytest.approx(ref, rel=1e-4)


@needs_native
def test_two_graphs_sharing_the_weights_each_backpropagate(backend):
    """Two step chains built before either backward pass share the derived weights."""

    def grads() -> list[torch.Tensor]:
        cell = _cell(False).eval()
        torch.manual_seed(4)
        xa, xb = torch.randn(3, 6, 5), torch.randn(3, 6, 5)
        ha, ca = cell.initial_state(6)
        hb, cb = cell.initial_state(6)
        for t in range(3):
            ha, ca = cell(xa[t], ha, ca)[:2]
            hb, cb = cell(xb[t], hb, cb)[:2]
        ha.sum().backward()
        hb.square().sum().backward()
        return [p.grad.clone() for p in cell.parameters() if p.grad is not None]

    got = grads()
    backend("torch")
    ref = grads()
    assert len(got) == len(ref)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


@needs_native
def test_a_partial_backward_leaves_no_stale_weight_gradients(backend):
    """A gradient for the initial state alone must not leak into a later weight gradient."""
    cell = _cell(False).eval()
    torch.manual_seed(5)
    x = torch.randn(3, 6, 5)
    h0 = torch.randn(6, 4, 6, requires_grad=True)
    h, c = h0, torch.zeros(6, 4, 6)
    for t in range(3):
        h, c = cell(x[t], h, c)[:2]
    (g_h0,) = torch.autograd.grad(h.sum(), h0, retain_graph=True)
    h.sum().backward()
    got = [p.grad.clone() for p in cell.parameters() if p.grad is not None]
    cell.zero_grad()
    backend("torch")
    h, c = h0, torch.zeros(6, 4, 6)
    for t in range(3):
        h, c = cell(x[t], h, c)[:2]
    (ref_h0,) = torch.autograd.grad(h.sum(), h0, retain_graph=True)
    h.sum().backward()
    ref = [p.grad for p in cell.parameters() if p.grad is not None]
    torch.testing.assert_close(g_h0, ref_h0, rtol=1e-4, atol=1e-5)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


@needs_native
def test_in_place_parameter_change_before_backward_is_an_error():
    cell = _cell(False)
    h, c = cell.initial_state(6)
    h, c = cell(torch.randn(6, 5), h, c)[:2]
    with torch.no_grad():
        cell.cell.weight_hh.add_(1.0)
    with pytest.raises(RuntimeError, match="modified in place"):
        h.sum().backward()


@needs_native
def test_a_stepped_cell_can_be_copied_and_inference_needs_no_cache():
    cell = _cell(False).eval()
    h, c = cell.initial_state(6)
    x = torch.randn(6, 5)
    h1, _ = cell(x, h, c)[:2]
    twin = copy.deepcopy(cell)  # the cached weights (with autograd history) are not copied
    with torch.no_grad():
        twin.comm_out.weight.data.mul_(2.0)  # an edit the version counter does not see
        h2, _ = twin(x, h, c)[:2]
        h3, _ = cell(x, h, c)[:2]
    assert torch.equal(h3, h1.detach())
    assert not torch.equal(h2, h3)
