from __future__ import annotations

import numpy as np
import pytest
import torch

from compile_seg.bench import ReferenceCompILE, reference_losses
from compile_seg.data import generate_batch
from compile_seg.losses import compute_losses, segment_probabilities
from compile_seg.model import NEG_INF, CompILE


def _batch(n=48, seed=0):
    return generate_batch(np.random.default_rng(seed), n).to_torch()


@pytest.mark.parametrize(("latent_dist", "count"), [("gaussian", 48_711), ("concrete", 46_631)])
def test_parameter_count_matches_the_original(latent_dist, count):
    model = CompILE(latent_dist=latent_dist)
    assert sum(p.numel() for p in model.parameters()) == count


@pytest.mark.parametrize("latent_dist", ["gaussian", "concrete"])
def test_output_shapes(latent_dist):
    x, lengths, _ = _batch(16)
    model = CompILE(hidden_dim=16, latent_dim=8, latent_dist=latent_dist)
    out = model(x, lengths)
    batch, steps = x.shape
    assert len(out.boundaries) == 3
    for m in range(3):
        assert out.encodings[m].shape == (batch, steps, 16)
        assert out.boundaries[m].shape == (batch, steps)
        assert out.encoder_masks[m].shape == (batch, steps)
        assert out.latents[m].shape == (batch, 8)
        assert out.reconstructions[m].shape == (batch, 6)
        width = 16 if latent_dist == "gaussian" else 8
        assert out.latent_logits[m].shape == (batch, width)
    assert out.boundary_logits[2] is None
    first = out.boundary_logits[0]
    assert first is not None
    assert (first[:, 0] == NEG_INF).all()
    torch.testing.assert_close(out.boundaries[0].sum(1), torch.ones(batch))
    assert (out.boundaries[2].argmax(1) == lengths - 1).all()


def test_gradients_reach_every_parameter():
    x, lengths, _ = _batch(16)
    model = CompILE(hidden_dim=16, latent_dim=8)
    compute_losses(model(x, lengths), x).total.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize(
    ("latent_dist", "mask_padding"), [("gaussian", False), ("concrete", False), ("gaussian", True)]
)
def test_same_function_as_the_naive_reference(latent_dist, mask_padding):
    """The fused model computes the reference's loss and gradients (same noise draws)."""
    x, lengths, _ = _batch(64)
    torch.manual_seed(0)
    ours = CompILE(latent_dist=latent_dist, mask_padding=mask_padding)
    ref = ReferenceCompILE(latent_dist=latent_dist, mask_padding=mask_padding)
    ref.load_state_dict(ours.state_dict())
    torch.manual_seed(1)
    out_ours = ours(x, lengths)
    loss_ours = compute_losses(out_ours, x, latent_dist=latent_dist)
    torch.manual_seed(1)
    out_ref = ref(x, lengths)
    total_ref, nll_ref = reference_losses(out_ref, x, latent_dist)
    torch.testing.assert_close(loss_ours.total, total_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss_ours.nll, nll_ref, atol=1e-5, rtol=1e-5)
    for m in range(3):
        # The last pass of the fused model stops before the (unused) last position.
        stop = x.shape[1] - 1 if m == 2 else x.shape[1]
        torch.testing.assert_close(
            out_ours.encodings[m][:, :stop], out_ref.encodings[m][:, :stop], atol=1e-6, rtol=1e-5
        )
    loss_ours.total.backward()
    total_ref.backward()
    scale = max(float(p.grad.abs().max()) for p in ref.parameters() if p.grad is not None)
    for (name, a), b in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6 * scale, rtol=1e-4, msg=name)


def _force_boundaries(model, positions):
    """Make the model's boundary head put its argmax at the given (B, M-1) positions."""

    def logits(encodings, lengths):
        steps, batch = encodings.shape[0], encodings.shape[1]
        out = torch.full((batch, steps), -5.0)
        out[:, 0] = NEG_INF
        m = len(calls)
        calls.append(m)
        out[torch.arange(batch), positions[:, m]] = 5.0
        return out + 0.0 * encodings.sum()

    calls = []
    model.boundary_logits = logits


def test_hard_segment_probabilities_partition_the_sequence():
    x, lengths, bounds = _batch(32)
    model = CompILE(hidden_dim=16, latent_dim=8).eval()
    _force_boundaries(model, bounds[:, :2])
    with torch.no_grad():
        out = model(x, lengths)
    probs = segment_probabilities(out)  # (M, B, T)
    t = torch.arange(x.shape[1])
    inside = t.unsqueeze(0) < (lengths - 1).unsqueeze(1)
    total = probs.sum(0)
    torch.testing.assert_close(total[inside], torch.ones(int(inside.sum())), atol=1e-6, rtol=0)
    torch.testing.assert_close(total[~inside], torch.zeros(int((~inside).sum())), atol=1e-6, rtol=0)
    # Each segment is exactly its true run.
    for m in range(3):
        start = torch.zeros_like(lengths) if m == 0 else bounds[:, m - 1]
        member = (t.unsqueeze(0) >= start.unsqueeze(1)) & (t.unsqueeze(0) < bounds[:, m : m + 1])
        torch.testing.assert_close(probs[m], member.float(), atol=1e-6, rtol=0)


def test_soft_segment_probabilities_sum_to_one_before_eos():
    x, lengths, _ = _batch(32)
    model = CompILE(hidden_dim=16, latent_dim=8).train()
    with torch.no_grad():
        probs = segment_probabilities(model(x, lengths))
    t = torch.arange(x.shape[1])
    inside = t.unsqueeze(0) < (lengths - 1).unsqueeze(1)
    total = probs.sum(0)[inside]
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-5, rtol=0)


def test_mask_padding_keeps_boundaries_off_padding():
    x, lengths, _ = _batch(64)
    model = CompILE(hidden_dim=16, latent_dim=8, mask_padding=True)
    with torch.no_grad():
        out = model(x, lengths)
    pad = torch.arange(x.shape[1]).unsqueeze(0) >= lengths.unsqueeze(1)
    for b in out.boundaries[:2]:
        assert b[pad].abs().max() < 1e-12


def test_eval_forward_is_deterministic_and_train_forward_is_noisy():
    x, lengths, _ = _batch(16)
    model = CompILE(hidden_dim=16, latent_dim=8)
    model.eval()
    with torch.no_grad():
        a, b = model(x, lengths), model(x, lengths)
    torch.testing.assert_close(a.boundaries[0], b.boundaries[0])
    torch.testing.assert_close(a.latents[1], b.latents[1])
    model.train()
    with torch.no_grad():
        c, d = model(x, lengths), model(x, lengths)
    assert not torch.equal(c.latents[0], d.latents[0])


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="inputs must be"):
        CompILE()(torch.zeros(3, dtype=torch.int64), torch.ones(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="latent_dist"):
        CompILE(latent_dist="beta")
