"""Pieces shared by the behaviour-cloning policies (spec §3.2, §6).

* :func:`normalized_rows_` — the "normalized Gaussian rows" init of BabyAI's linear layers.
* :func:`sinusoid_1d` / :func:`sinusoid_2d` — the positional encodings of the python package
  ``positional-encodings`` (frequencies ``f_i = 10000^(−2i/D)``, sin/cos interleaved; the 2-D
  version gives the first ``D′ = 2⌈D/4⌉`` channels to the row index, the next ``D′`` to the
  column index).
* :func:`bc_loss` — cross-entropy on valid steps − 0.01 × entropy over all positions.

Policies share one call signature, ``policy(images, directions, missions) -> logits``:
``images [N, 8, 8, 3]`` integer (object, colour, state) in [row, col] order, ``directions [N]``
in 0..3, ``missions [N, 5]`` token ids; logits ``[N, 7]`` (log-probabilities for FiLM).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = [
    "ENTROPY_WEIGHT",
    "N_ACTIONS",
    "bc_loss",
    "normalized_rows_",
    "sinusoid_1d",
    "sinusoid_2d",
]

N_ACTIONS = 7
ENTROPY_WEIGHT = 0.01


@torch.no_grad()
def normalized_rows_(linear: nn.Linear) -> nn.Linear:
    """Initialise ``linear`` in place with BabyAI's ``init_params``.

    N(0, 1) weights, each output row scaled to unit L2 norm, bias 0.
    """
    linear.weight.normal_(0.0, 1.0)
    linear.weight.div_(linear.weight.norm(dim=1, keepdim=True))
    if linear.bias is not None:
        linear.bias.zero_()
    return linear


def _interleaved(positions: Tensor, channels: int) -> Tensor:
    """``[P]`` positions → ``[P, channels]`` (``channels`` even).

    Features (sin p·f_0, cos p·f_0, sin p·f_1, …) with ``f_i = 10000^(−2i/channels)``.
    """
    inv_freq = 1.0 / (10000 ** (torch.arange(0, channels, 2, dtype=torch.float64) / channels))
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)


def sinusoid_1d(length: int, channels: int) -> Tensor:
    """1-D sinusoidal encoding ``[length, channels]`` (float32).

    Odd ``channels`` are computed with ``channels + 1`` and truncated, as the package does.
    """
    even = 2 * math.ceil(channels / 2)
    pe = _interleaved(torch.arange(length), even)
    return pe[:, :channels].float()


def sinusoid_2d(height: int, width: int, channels: int) -> Tensor:
    """2-D sinusoidal encoding ``[height, width, channels]`` (float32).

    ``D′ = 2⌈channels/4⌉``: channels ``[0, D′)`` encode the row index with the 1-D rule at
    ``D′`` channels, ``[D′, 2D′)`` the column index; truncated to ``channels``.
    """
    d = 2 * math.ceil(channels / 4)
    rows = _interleaved(torch.arange(height), d)  # [H, D′]
    cols = _interleaved(torch.arange(width), d)  # [W, D′]
    pe = torch.cat(
        (rows[:, None, :].expand(height, width, d), cols[None, :, :].expand(height, width, d)),
        dim=-1,
    )
    return pe[..., :channels].float()


def bc_loss(
    logits: Tensor,
    actions: Tensor,
    valid: Tensor,
    weights: Tensor | None = None,
    entropy_weight: float = ENTROPY_WEIGHT,
) -> tuple[Tensor, Tensor, Tensor]:
    """The baselines' behaviour-cloning loss (spec §6).

    ``loss = mean CE(logits, action) over valid frames − entropy_weight × mean entropy over
    all frames`` (padding included).

    Args:
        logits: ``[N, A]`` unnormalised (or log-softmax) action scores.
        actions: ``[N]`` demonstrated actions (any value on padding frames).
        valid: ``[N]`` bool, True on valid (non-padding) frames.
        weights: ``[N]`` multiplicity of each frame in the padded batch (None: all 1). A
            batch that keeps one representative per run of identical padding frames passes
            the run length here; the result equals that of the full padded batch.
        entropy_weight: the entropy bonus (0.01 in the original).

    Returns:
        ``(loss, ce, entropy)`` scalars; ``ce`` and ``entropy`` are the two means.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    w = torch.ones_like(logp[:, 0]) if weights is None else weights.to(logp.dtype)
    entropy = -(logp.exp() * logp).sum(-1)
    mean_entropy = (w * entropy).sum() / w.sum()
    target = torch.where(valid, actions, torch.zeros_like(actions)).long()
    nll = -logp.gather(1, target[:, None]).squeeze(1)
    vw = w * valid.to(logp.dtype)
    ce = (vw * nll).sum() / vw.sum().clamp_min(1.0)
    return ce - entropy_weight * mean_entropy, ce, mean_entropy
