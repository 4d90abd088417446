"""Training objective: reconstruction NLL + beta_z KL(z) + beta_b KL(b).

All terms follow the original toy implementation (see the package docs for its quirks):

* NLL: per segment, the cross-entropy of the segment's single symbol distribution at every
  position ``t <= T - 2`` (the last padded column is dropped), weighted by the soft
  probability ``P_m[t]`` that position t belongs to segment m; summed over time and
  segments, averaged over the batch.
* KL(z): Gaussian KL to N(0, I), or for concrete latents ``sum_k p_k log(p_k + eps)`` (the
  KL to a uniform categorical without its ``log D`` constant; negative values are normal).
* KL(b), ``boundary_prior="first"`` (original): first boundary only, scaled by M, against a
  Poisson(lambda) log-prior over k = 1..T normalised over those T values, position t paired
  with k = t + 1 and position 0 dropped without renormalising.
* KL(b), ``boundary_prior="per-boundary"`` (improvement): every boundary m < M - 1 against
  a truncated Poisson prior on its segment's length, ``prior_m[t] = sum_s b_{m-1}[s]
  pi(t - s)`` with ``b_{-1}`` at position 0 and ``pi`` the Poisson(lambda) pmf on lengths
  1..T-1, renormalised over positions; no factor M.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from compile_seg.model import EPS, CompILEOutput


@dataclasses.dataclass
class Losses:
    """The objective and its parts (0-d tensors).

    Attributes:
        total: ``nll + beta_z * kl_z + beta_b * kl_b``.
        nll: reconstruction negative log-likelihood.
        kl_z: latent KL, summed over segments.
        kl_b: boundary KL.
    """

    total: torch.Tensor
    nll: torch.Tensor
    kl_z: torch.Tensor
    kl_b: torch.Tensor


def poisson_log_prior(length: int, rate: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(length,)`` log-probabilities of a Poisson(rate) truncated to k = 1..length.

    Entry ``k - 1`` is ``log(rate^k e^-rate / k!)`` renormalised over the ``length`` values.
    """
    k = torch.arange(1, length + 1, dtype=torch.float32, device=device)
    unnormalised = k * math.log(rate) - rate - torch.lgamma(k + 1)
    return F.log_softmax(unnormalised, dim=0)


def kl_gaussian(logits: torch.Tensor) -> torch.Tensor:
    """``(B,)`` KL(N(mu, sigma^2) || N(0, I)) from ``(B, 2D)`` (mean, log-variance) logits."""
    mu, log_var = logits.chunk(2, dim=1)
    return -0.5 * torch.sum(1 + log_var - mu * mu - torch.exp(log_var), dim=1)


def kl_concrete(logits: torch.Tensor) -> torch.Tensor:
    """``(B,)`` ``sum_k p_k log(p_k + eps)`` with ``p = softmax(logits)`` (``(B, D)`` logits)."""
    probs = F.softmax(logits, dim=1)
    return torch.sum(probs * torch.log(probs + EPS), dim=1)


def kl_categorical(probs: torch.Tensor, log_prior: torch.Tensor) -> torch.Tensor:
    """``(B,)`` ``sum_t p_t (log(p_t + eps) - log prior_t)`` for ``(B, N)`` probabilities."""
    return torch.sum(probs * (torch.log(probs + EPS) - log_prior), dim=1)


def kl_boundary_first(logits_b0: torch.Tensor, num_segments: int, rate: float) -> torch.Tensor:
    """The original's boundary KL: first boundary only, times M (0-d tensor).

    Args:
        logits_b0: ``(B, T)`` logits of the first boundary.
        num_segments: M, the stand-in factor for the other boundaries.
        rate: Poisson rate lambda.
    """
    probs = F.softmax(logits_b0, dim=1)
    log_prior = poisson_log_prior(probs.shape[1], rate, probs.device)
    return num_segments * kl_categorical(probs[:, 1:], log_prior[1:]).mean()


def length_prior_matrix(steps: int, rate: float, device: torch.device | str) -> torch.Tensor:
    """``(T, T)`` matrix ``K[s, t] = pi(t - s)`` for ``t > s`` (else 0).

    ``pi`` is the Poisson(rate) pmf on segment lengths 1..T-1, normalised over those values.
    """
    lengths = torch.arange(1, steps, dtype=torch.float32, device=device)
    log_pi = F.log_softmax(lengths * math.log(rate) - rate - torch.lgamma(lengths + 1), dim=0)
    pi = torch.cat([log_pi.new_zeros(1), log_pi.exp()])  # index = length, pi[0] = 0
    offsets = torch.arange(steps, device=device)
    diff = offsets.unsqueeze(0) - offsets.unsqueeze(1)  # t - s
    return torch.where(diff > 0, pi[diff.clamp(min=0)], torch.zeros((), device=device))


def kl_boundary_per_boundary(out: CompILEOutput, rate: float) -> torch.Tensor:
    """Boundary KL on every segment length (improvement option; 0-d tensor).

    Boundary m's prior is the previous boundary's sample ``b_{m-1}`` (position 0 for m = 0)
    convolved with the truncated Poisson length prior, renormalised per sample.
    """
    first = out.boundaries[0]
    batch, steps = first.shape
    kernel = length_prior_matrix(steps, rate, first.device)
    previous = first.new_zeros(batch, steps)
    previous[:, 0] = 1.0
    total = first.new_zeros(batch)
    for logits, sample in zip(out.boundary_logits, out.boundaries, strict=True):
        if logits is None:
            break
        prior = previous @ kernel
        prior = prior / prior.sum(1, keepdim=True).clamp_min(EPS)
        probs = F.softmax(logits, dim=1)
        total = total + kl_categorical(probs, torch.log(prior + EPS))
        previous = sample
    return total.mean()


def segment_probabilities(out: CompILEOutput) -> torch.Tensor:
    """``(M, B, T)`` soft membership ``P_m[t]`` of position t in segment m.

    ``P_0 = 1 - cumsum(b_0)`` and ``P_m = (1 - cumsum(b_m)) * w_m`` for m >= 1, with w_m the
    mask segment m's encoder ran with. With hard boundaries inside the sequence, the P_m sum
    to 1 at positions t < L - 1 and to 0 from the EOS on.
    """
    probs = []
    for m, (b, w) in enumerate(zip(out.boundaries, out.encoder_masks, strict=True)):
        after = 1.0 - torch.cumsum(b, dim=1)
        probs.append(after if m == 0 else after * w)
    return torch.stack(probs)


def reconstruction_nll(out: CompILEOutput, inputs: torch.Tensor) -> torch.Tensor:
    """Segment-weighted cross-entropy (0-d tensor); the last padded column is dropped."""
    targets = inputs[:, :-1]  # (B, T-1)
    seg_probs = segment_probabilities(out)[:, :, :-1]  # (M, B, T-1)
    total = inputs.new_zeros((), dtype=seg_probs.dtype)
    for m, logits in enumerate(out.reconstructions):
        neg_log_probs = -F.log_softmax(logits, dim=1)  # (B, V)
        cross_entropy = torch.gather(neg_log_probs, 1, targets)  # (B, T-1)
        total = total + (cross_entropy * seg_probs[m]).sum(1).mean()
    return total


def compute_losses(
    out: CompILEOutput,
    inputs: torch.Tensor,
    *,
    latent_dist: str = "gaussian",
    beta_b: float = 0.1,
    beta_z: float = 0.1,
    prior_rate: float = 3.0,
    boundary_prior: str = "first",
) -> Losses:
    """The full objective for one forward pass.

    Args:
        out: the model output.
        inputs: ``(B, T)`` tokens (the reconstruction targets).
        latent_dist: ``"gaussian"`` or ``"concrete"``.
        beta_b: weight of the boundary KL.
        beta_z: weight of the latent KL.
        prior_rate: Poisson rate lambda.
        boundary_prior: ``"first"`` (original) or ``"per-boundary"``.
    """
    nll = reconstruction_nll(out, inputs)
    kl_fn = kl_gaussian if latent_dist == "gaussian" else kl_concrete
    kl_z = torch.stack([kl_fn(logits).mean() for logits in out.latent_logits]).sum()
    num_segments = len(out.boundaries)
    if num_segments < 2:
        kl_b = nll.new_zeros(())
    elif boundary_prior == "first":
        first = out.boundary_logits[0]
        assert first is not None
        kl_b = kl_boundary_first(first, num_segments, prior_rate)
    elif boundary_prior == "per-boundary":
        kl_b = kl_boundary_per_boundary(out, prior_rate)
    else:
        raise ValueError(
            f"boundary_prior must be 'first' or 'per-boundary', got {boundary_prior!r}"
        )
    total = nll + beta_z * kl_z + beta_b * kl_b
    return Losses(total=total, nll=nll, kl_z=kl_z, kl_b=kl_b)
