from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compile_seg.data import generate_batch
from compile_seg.losses import (
    compute_losses,
    kl_boundary_first,
    kl_boundary_per_boundary,
    kl_concrete,
    kl_gaussian,
    length_prior_matrix,
    poisson_log_prior,
    reconstruction_nll,
)
from compile_seg.model import NEG_INF, CompILE, CompILEOutput


def test_gaussian_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu, log_var = torch.randn(7, 5), torch.randn(7, 5)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, torch.exp(0.5 * log_var)), torch.distributions.Normal(0, 1)
    ).sum(1)
    torch.testing.assert_close(kl_gaussian(torch.cat([mu, log_var], 1)), expected)


def test_concrete_kl_is_negative_entropy():
    torch.manual_seed(0)
    logits = torch.randn(7, 5)
    entropy = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(kl_concrete(logits), -entropy)
    uniform = kl_concrete(torch.zeros(1, 8))
    torch.testing.assert_close(uniform, torch.tensor([-math.log(8)]))


def test_poisson_prior_is_normalised_truncated_poisson():
    log_prior = poisson_log_prior(6, 3.0)
    k = np.arange(1, 7)
    pmf = np.array([3.0**i * math.exp(-3.0) / math.factorial(i) for i in k])
    np.testing.assert_allclose(log_prior.exp().numpy(), pmf / pmf.sum(), rtol=1e-5)


@pytest.mark.parametrize("steps", [5, 13])
def test_first_boundary_kl_with_uniform_logits_matches_closed_form(steps):
    logits = torch.zeros(4, steps)
    logits[:, 0] = NEG_INF
    # Closed form: p_t = 1/(T-1) for t >= 1, prior entry k = t + 1 of the Poisson over 1..T.
    unnorm = [k * math.log(3.0) - 3.0 - math.lgamma(k + 1) for k in range(1, steps + 1)]
    log_z = math.log(sum(math.exp(u) for u in unnorm))
    p = 1.0 / (steps - 1)
    kl = sum(p * (math.log(p + 1e-17) - (unnorm[t] - log_z)) for t in range(1, steps))
    torch.testing.assert_close(kl_boundary_first(logits, 3, 3.0), torch.tensor(3 * kl))


def test_length_prior_matrix_rows():
    kernel = length_prior_matrix(6, 3.0, "cpu")
    assert (kernel.tril() == 0).all()
    torch.testing.assert_close(kernel[0, 1:].sum(), torch.tensor(1.0))
    lengths = torch.arange(1, 6, dtype=torch.float32)
    pmf = torch.exp(lengths * math.log(3.0) - 3.0 - torch.lgamma(lengths + 1))
    torch.testing.assert_close(kernel[0, 1:], pmf / pmf.sum())
    torch.testing.assert_close(kernel[2, 3:], kernel[0, 1:4])


def _hand_output(first_logits, second_logits, first_sample, steps):
    batch = first_logits.shape[0]
    zeros = torch.zeros(batch, steps)
    return CompILEOutput(
        encodings=[],
        boundary_logits=[first_logits, second_logits, None],
        boundaries=[first_sample, zeros, zeros],
        encoder_masks=[torch.ones(batch, steps), zeros, zeros],
        latent_logits=[],
        latents=[],
        reconstructions=[],
    )


def test_per_boundary_prior_first_term_is_kl_to_poisson_lengths():
    steps = 7
    logits = torch.randn(3, steps)
    logits[:, 0] = NEG_INF
    second = torch.full((3, steps), NEG_INF)
    second[:, 4] = 0.0  # the second boundary is certainly at 4
    prev = torch.zeros(3, steps)
    prev[:, 2] = 1.0  # the first boundary's sample is at 2
    value = kl_boundary_per_boundary(_hand_output(logits, second, prev, steps), 3.0)
    kernel = length_prior_matrix(steps, 3.0, "cpu")
    p = torch.softmax(logits, 1)
    first_kl = (p * (torch.log(p + 1e-17) - torch.log(kernel[0] + 1e-17))).sum(1)
    prior_second = kernel[2] / kernel[2].sum()
    second_kl = -torch.log(prior_second[4])  # KL of a point mass at 4
    torch.testing.assert_close(value, (first_kl + second_kl).mean(), atol=1e-5, rtol=1e-5)


def test_nll_hand_example():
    inputs = torch.tensor([[1, 1, 2, 0]])
    steps = 4
    b0 = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    b1 = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    logits0 = torch.log(torch.tensor([[0.1, 0.6, 0.1, 0.1, 0.05, 0.05]]))
    logits1 = torch.log(torch.tensor([[0.1, 0.1, 0.5, 0.1, 0.1, 0.1]]))
    mask1 = torch.exp(torch.log(torch.cumsum(b0, 1) + 1e-17))
    out = CompILEOutput(
        encodings=[],
        boundary_logits=[torch.zeros(1, steps), None],
        boundaries=[b0, b1],
        encoder_masks=[torch.ones(1, steps), mask1],
        latent_logits=[],
        latents=[],
        reconstructions=[logits0, logits1],
    )
    expected = -2 * math.log(0.6) - math.log(0.5)
    torch.testing.assert_close(
        reconstruction_nll(out, inputs), torch.tensor(expected), atol=1e-6, rtol=1e-6
    )


@pytest.mark.parametrize("prior", ["first", "per-boundary"])
@pytest.mark.parametrize("latent_dist", ["gaussian", "concrete"])
def test_total_loss_is_finite_and_weighted(prior, latent_dist):
    x, lengths, _ = generate_batch(np.random.default_rng(0), 16).to_torch()
    model = CompILE(hidden_dim=16, latent_dim=8, latent_dist=latent_dist)
    losses = compute_losses(
        model(x, lengths), x, latent_dist=latent_dist, boundary_prior=prior, beta_b=0.3, beta_z=0.2
    )
    assert torch.isfinite(losses.total)
    torch.testing.assert_close(losses.total, losses.nll + 0.2 * losses.kl_z + 0.3 * losses.kl_b)
    losses.total.backward()
    with pytest.raises(ValueError, match="boundary_prior"):
        compute_losses(model(x, lengths), x, boundary_prior="none")
