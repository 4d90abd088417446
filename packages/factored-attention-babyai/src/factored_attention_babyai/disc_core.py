"""Discriminator pieces that need no files: pair sampling (§4.3), the step (§4.2), validation.

* :class:`GoalDemos` — the training subset grouped by goal (equal counts per goal).
* :func:`sample_pairs` — one batch of positive/negative pairs of end-of-demonstration states.
* :class:`Discriminator` — interaction model (``model.*`` keys) + masking module (``mask.*``).
* :func:`discriminator_losses` — L_int, L_img, mask entropy and the sparsity penalty R.
* :func:`goal_metrics` — soft precision/recall/F1 and pos-weighted BCE against goal masks.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from factored_attention_babyai.models.interaction import build_interaction, sparsity_penalty
from factored_attention_babyai.models.masking import (
    MaskModule,
    image_loss,
    interaction_loss,
    mask_entropy,
)


@dataclasses.dataclass(frozen=True)
class GoalDemos:
    """Demonstrations grouped by goal, ``n`` per goal (the §2.6 training subset).

    Attributes:
        images: [G, n, T, 8, 8, 3] uint8 frames (zero padded after each demo's length).
        directions: [G, n, T] agent directions.
        lengths: [G, n] demo lengths T_d (≥ 2); frame T_d − 1 faces the goal.
        missions: [G, L] token ids of each goal.
    """

    images: np.ndarray
    directions: np.ndarray
    lengths: np.ndarray
    missions: np.ndarray

    @property
    def n_goals(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def per_goal(self) -> int:
        return int(self.lengths.shape[1])


class PairBatch(NamedTuple):
    """A batch of 2·P pair items, positives at even rows and negatives at odd rows.

    Attributes:
        missions: [2P, L] the anchor's mission.
        src_images / src_directions: [2P, 8, 8, 3] / [2P] the anchor's final frame.
        tgt_images / tgt_directions: [2P, 8, 8, 3] / [2P] the compared state.
        labels: [2P] 1 for positives, 0 for negatives.
    """

    missions: Tensor
    src_images: Tensor
    src_directions: Tensor
    tgt_images: Tensor
    tgt_directions: Tensor
    labels: Tensor


def sample_pairs(demos: GoalDemos, rng: np.random.Generator, n_pairs: int) -> PairBatch:
    """Draw ``n_pairs`` positive/negative pairs (spec §4.3, paper Appendix D).

    For each pair: two distinct goals G, G′; two distinct demos D1, D2 of G and one demo D′ of
    G′. Positive: (mission G, final frame of D1, final frame of D2, 1). Negative: (mission G,
    final frame of D1, y = 0) against — with probability 1/#goals — a random non-final frame
    of D1 (the "null goal"), otherwise the final frame of D′.

    Args:
        demos: the training subset (needs ≥ 2 goals and ≥ 2 demos per goal).
        rng: the sampling RNG (its state is checkpointed, so a resumed run draws the same).
        n_pairs: P.
    """
    g_count, n = demos.n_goals, demos.per_goal
    goal = rng.integers(g_count, size=n_pairs)
    other_goal = (goal + rng.integers(1, g_count, size=n_pairs)) % g_count
    d1 = rng.integers(n, size=n_pairs)
    d2 = (d1 + rng.integers(1, n, size=n_pairs)) % n
    d_other = rng.integers(n, size=n_pairs)
    null = rng.random(n_pairs) < 1.0 / g_count
    len1 = demos.lengths[goal, d1]
    null_t = np.floor(rng.random(n_pairs) * (len1 - 1)).astype(np.int64)  # in [0, T − 2]

    final1 = len1 - 1
    final2 = demos.lengths[goal, d2] - 1
    final_other = demos.lengths[other_goal, d_other] - 1
    neg_goal = np.where(null, goal, other_goal)
    neg_demo = np.where(null, d1, d_other)
    neg_t = np.where(null, null_t, final_other)

    def interleave(pos: np.ndarray, neg: np.ndarray) -> Tensor:
        out = np.empty((2 * n_pairs, *pos.shape[1:]), dtype=pos.dtype)
        out[0::2], out[1::2] = pos, neg
        return torch.from_numpy(out)

    src_img = demos.images[goal, d1, final1]
    src_dir = demos.directions[goal, d1, final1]
    return PairBatch(
        missions=interleave(demos.missions[goal], demos.missions[goal]).long(),
        src_images=interleave(src_img, src_img),
        src_directions=interleave(src_dir, src_dir).long(),
        tgt_images=interleave(
            demos.images[goal, d2, final2], demos.images[neg_goal, neg_demo, neg_t]
        ),
        tgt_directions=interleave(
            demos.directions[goal, d2, final2], demos.directions[neg_goal, neg_demo, neg_t]
        ).long(),
        labels=interleave(np.ones(n_pairs, np.int64), np.zeros(n_pairs, np.int64)),
    )


class Discriminator(nn.Module):
    """An interaction model (``model``) and the masking module (``mask``) trained together."""

    def __init__(self, model_name: str, n_words: int) -> None:
        super().__init__()
        self.model_name = model_name
        self.model = build_interaction(model_name, n_words)
        self.mask = MaskModule()


class Losses(NamedTuple):
    """One step's L_int (``bce``), L_img (``timg``), mask entropy (``me``) and R (``l1c``)."""

    bce: Tensor
    timg: Tensor
    me: Tensor
    l1c: Tensor | None


def discriminator_losses(disc: Discriminator, batch: PairBatch) -> Losses:
    """Run both states of every pair through the interaction model and the masking module.

    The interaction model sees [source; target] as one batch; L_int reads the target's
    logits with π_t detached, L_img reads both states' factor embeddings detached.
    """
    n = batch.labels.shape[0]
    images = torch.cat([batch.src_images, batch.tgt_images])
    directions = torch.cat([batch.src_directions, batch.tgt_directions])
    out = disc.model(images, torch.cat([batch.missions, batch.missions]))
    pi = disc.mask(images, directions)
    pi_s, pi_t = pi[:n], pi[n:]
    factors = out.factors.detach()
    bce = interaction_loss(out.logits[n:], pi_t.detach(), batch.labels)
    timg = image_loss(pi_s, pi_t, factors[:n], factors[n:], batch.labels)
    return Losses(
        bce, timg, mask_entropy(pi_t.detach()), sparsity_penalty(disc.model, disc.model_name)
    )


def goal_metrics(logits: Tensor, targets: Tensor) -> dict[str, float]:
    """Soft goal-identification scores of §4.4 for one validation set.

    Args:
        logits: [N, H, W] cell logits.
        targets: [N, H, W] bool goal masks.

    Returns:
        ``vsprec`` (Σσ·t/Σσ), ``vsrecall`` (Σσ·t/Σt), each per image then averaged; ``vsf1``
        from the averaged precision and recall; ``vtarget`` the BCE with pos_weight = H·W.
    """
    t = targets.float()
    p = torch.sigmoid(logits.float())
    tp = (p * t).flatten(1).sum(-1)
    precision = (tp / p.flatten(1).sum(-1).clamp_min(1e-8)).mean()
    recall = (tp / t.flatten(1).sum(-1).clamp_min(1e-8)).mean()
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-8)
    pos_weight = torch.tensor(float(t[0].numel()), device=logits.device)
    bce = F.binary_cross_entropy_with_logits(logits.float(), t, pos_weight=pos_weight)
    return {
        "vsprec": float(precision),
        "vsrecall": float(recall),
        "vsf1": float(f1),
        "vtarget": float(bce),
    }
