"""Stage-1 objectives and metrics (learning spec §3, §5) and the L^R reward.

Every sequence loss and accuracy is taken over the *union* of the target's real positions and
the predicted positions up to and including the first predicted end token (pad 50 for
programs, 5 for actions), as a token-level mean over the batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from leaps_karel import dsl
from leaps_karel.interpreter import DEFAULT_BUDGET, compile_program
from leaps_karel.world import World

__all__ = [
    "behaviour_rewards",
    "kl_loss",
    "prefix_match",
    "reinforce_loss",
    "sequence_accuracy",
    "sequence_loss",
    "union_mask",
    "upto_first_end",
]


def upto_first_end(pred: Tensor, end: int) -> Tensor:
    """``[..., T]`` bool: positions up to and including the first ``pred ≥ end`` (all if none)."""
    ended = (pred >= end).long()
    before = torch.cumsum(ended, -1) - ended  # ends strictly before each position
    return before == 0


def union_mask(pred: Tensor, target: Tensor, end: int) -> Tensor:
    """``[..., T]`` bool: real target positions ∪ predicted positions up to the first end."""
    return (target < end) | upto_first_end(pred, end)


def sequence_loss(logits: Tensor, target: Tensor, end: int) -> tuple[Tensor, Tensor]:
    """Cross-entropy over the union mask (token-level mean).

    Args:
        logits: ``[..., T, C]`` (masked) logits.
        target: ``[..., T]`` long targets (``end`` and above = after the sequence).
        end: the end id (50 for programs, 5 for actions).

    Returns:
        The scalar loss and the ``[..., T]`` bool mask it used.
    """
    mask = union_mask(logits.argmax(-1), target, end)
    nll = F.cross_entropy(logits.flatten(0, -2), target.flatten(), reduction="none")
    nll = nll.reshape(target.shape)
    return (nll * mask).sum() / mask.sum().clamp(min=1), mask


def sequence_accuracy(pred: Tensor, target: Tensor, end: int) -> tuple[float, float]:
    """Token accuracy and sequence accuracy (all masked positions right) over the union mask.

    Args:
        pred: ``[N, T]`` predicted ids.
        target: ``[N, T]`` target ids.
        end: the end id.

    Returns:
        ``(token_accuracy, sequence_accuracy)``.
    """
    mask = union_mask(pred, target, end)
    right = (pred == target) | ~mask
    tokens = float(((pred == target) & mask).sum()) / max(1, int(mask.sum()))
    return tokens, float(right.all(-1).float().mean())


def kl_loss(mu: Tensor, log_sigma: Tensor) -> Tensor:
    """``½ · mean(μ² + σ² − log σ² − 1)`` over batch and latent dimensions (spec §3.2)."""
    return 0.5 * (mu.pow(2) + torch.exp(2 * log_sigma) - 2 * log_sigma - 1).mean()


def reinforce_loss(
    logits: Tensor,
    tokens: Tensor,
    advantages: Tensor,
    entropy_coef: float,
) -> tuple[Tensor, Tensor]:
    """The decoder's REINFORCE loss of spec §3.5 (without the KL term).

    Args:
        logits: ``[B, T, 51]`` masked logits of teacher-forced decoding of ``tokens``.
        tokens: ``[B, T]`` sampled programs (pad 50 after the first pad).
        advantages: ``[B]`` whitened returns.
        entropy_coef: c_H.

    Returns:
        The scalar loss ``−mean(Â · log p(ρ̂|z)) − c_H · H̄`` and the mean entropy H̄.
    """
    mask = upto_first_end(tokens, dsl.PAD_ID)
    logp = torch.log_softmax(logits, -1)
    token_logp = logp.gather(-1, tokens[..., None])[..., 0]
    seq_logp = (token_logp * mask).sum(-1)
    probs = logp.exp()
    ent = -torch.where(probs > 0, probs * logp, torch.zeros_like(logp)).sum(-1)
    mean_ent = (ent * mask).sum() / mask.sum().clamp(min=1)
    return -(advantages * seq_logp).mean() - entropy_coef * mean_ent, mean_ent


def prefix_match(initial: World, gt: Sequence[int], pred: Sequence[int]) -> float:
    """Prefix-match score of two executions from the same world (spec §3.5, step 3).

    With ℓ_g, ℓ_p the numbers of states (initial included) and m the number of leading
    identical states: ``(m − 1) / (max(ℓ_g, ℓ_p) − 1)``; 1 when both have one state.
    """
    lg, lp = len(gt) + 1, len(pred) + 1
    if lg == lp == 1:
        return 1.0
    a, b = initial.copy(), initial.copy()
    m = 1
    for x, y in zip(gt, pred, strict=False):
        a.step(int(x))
        b.step(int(y))
        if a != b:
            break
        m += 1
    return (m - 1) / (max(lg, lp) - 1)


def _rewards_chunk(
    gt_programs: Sequence[str],
    pred_programs: Sequence[str],
    seeds: Sequence[int],
    num_demos: int,
    wall_prob: float,
    max_states: int,
    max_trials: int,
    budget: int,
) -> list[float]:
    from leaps_karel.demos import _WorldBatch, sample_worlds

    rewards = []
    for gt, pred, seed in zip(gt_programs, pred_programs, seeds, strict=True):
        if not dsl.is_valid(pred):
            rewards.append(0.01)
            continue
        rng = np.random.default_rng(seed)
        run_gt = compile_program(gt, mode="no_crash", budget=budget, record=True)
        run_pred = compile_program(pred, mode="no_crash", budget=budget, record=True)
        demos: list[tuple[World, list[int]]] = []
        fallback: list[tuple[World, list[int]]] = []
        tried = 0
        while len(demos) < num_demos and tried < max_trials:
            batch = _WorldBatch(*sample_worlds(rng, 2 * num_demos, 8, 8, wall_prob, 0.1))
            for k in range(2 * num_demos):
                tried += 1
                actions = run_gt(batch.world(k))[0]
                world = batch.world(k, neighbours=True)
                if len(actions) + 1 <= max_states:
                    demos.append((world, actions))
                elif len(fallback) < num_demos:
                    fallback.append((world, actions[: max_states - 1]))
                if len(demos) == num_demos:
                    break
        demos = demos or fallback
        scores = [prefix_match(w, acts, run_pred(w.copy())[0]) for w, acts in demos]
        rewards.append(float(np.mean(scores)) + 0.1)
    return rewards


def behaviour_rewards(
    gt_programs: Sequence[str],
    pred_programs: Sequence[str],
    seeds: Sequence[int] | np.random.Generator,
    *,
    num_demos: int = 10,
    wall_prob: float = 0.25,
    max_states: int = 100,
    max_trials: int = 100,
    budget: int = DEFAULT_BUDGET,
    workers: int = 1,
) -> np.ndarray:
    """R(ρ̂, ρ) of spec §3.5 for each pair: mean prefix match on fresh worlds + 0.1, or 0.01.

    For each ground-truth program fresh 8×8 worlds (wall probability ``wall_prob``, drawn from
    ``default_rng(seed)`` of that pair) are drawn until ``num_demos`` no-crash executions of at
    most ``max_states`` states were found (at most ``max_trials`` worlds; fewer demos are used
    when the limit is hit, the truncated first worlds when none qualified); the predicted
    program runs from the same initial worlds. The original's "cover all branches" world
    selection is not reproduced (the first qualifying worlds are used).

    Args:
        gt_programs: ground-truth program texts.
        pred_programs: predicted program texts (invalid ones get 0.01).
        seeds: one world seed per pair, or a generator to draw them from.
        num_demos: demonstrations per ground-truth program.
        wall_prob: wall probability of the fresh worlds.
        max_states: longest accepted demonstration, in states.
        max_trials: worlds tried per program.
        budget: call budget of both executions.
        workers: processes (the result does not depend on it).

    Returns:
        float64 ``[B]``.
    """
    args = (num_demos, wall_prob, max_states, max_trials, budget)
    n = len(gt_programs)
    if isinstance(seeds, np.random.Generator):
        seed_list: list[int] = seeds.integers(0, 2**63 - 1, size=n).tolist()
    else:
        seed_list = [int(x) for x in seeds]
    if workers <= 1 or n < 2 * workers:
        return np.asarray(_rewards_chunk(gt_programs, pred_programs, seed_list, *args))
    from concurrent.futures import ProcessPoolExecutor

    bounds = np.linspace(0, n, workers + 1).astype(int)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(_rewards_chunk, gt_programs[a:b], pred_programs[a:b], seed_list[a:b], *args)
            for a, b in itertools.pairwise(bounds)
        ]
        return np.asarray([x for f in futures for x in f.result()])
