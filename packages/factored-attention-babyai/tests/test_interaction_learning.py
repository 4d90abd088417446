"""Slow: sparse factored attention trained with L_int on in-distribution goals only finds the
held-out colour–type combinations as well as the trained ones (the paper's claim, on synthetic
final frames with the masking module replaced by the faced cell)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factored_attention_babyai.disc_core import goal_metrics
from factored_attention_babyai.figures import sparsity_summary
from factored_attention_babyai.models.interaction import FactoredAttention, l1_weight
from factored_attention_babyai.models.masking import interaction_loss
from factored_attention_babyai.vocab import WORD_TO_IDX, WORDS

COLORS = ("red", "green", "blue", "purple", "yellow", "grey")
TYPES = {5: "key", 6: "ball", 7: "box"}
HELD_OUT = {("red", "ball"), ("green", "box"), ("blue", "key"), ("yellow", "key"),
            ("grey", "box"), ("purple", "ball")}  # fmt: skip
ALL = [(c, t) for c in range(6) for t in TYPES]
ID_GOALS = [g for g in ALL if (COLORS[g[0]], TYPES[g[1]]) not in HELD_OUT]
OOD_GOALS = [g for g in ALL if (COLORS[g[0]], TYPES[g[1]]) in HELD_OUT]


def _tokens(goal: tuple[int, int]) -> list[int]:
    return [WORD_TO_IDX[w] for w in ("go", "to", "the", COLORS[goal[0]], TYPES[goal[1]])]


def _rooms(rng: np.random.Generator, n: int, goals: list) -> tuple[torch.Tensor, ...]:
    """Final frames: the agent faces the one object of its goal among 7 other objects."""
    img = np.zeros((n, 8, 8, 3), np.int64)
    img[..., 0] = 1
    img[:, [0, -1], :, :2] = (2, 5)
    img[:, :, [0, -1], :2] = (2, 5)
    which = rng.integers(len(goals), size=n)
    faced = np.zeros((n, 2), np.int64)
    for i in range(n):
        colour, kind = goals[which[i]]
        for k, cell in enumerate(rng.permutation(36)[:9]):
            r, c = 1 + cell // 6, 1 + cell % 6
            if k == 0:
                img[i, r, c, :2], faced[i] = (kind, colour), (r, c)
            elif k == 8:
                img[i, r, c, :2] = (10, 0)
            else:
                while (pair := (int(rng.integers(5, 8)), int(rng.integers(6)))) == (kind, colour):
                    pass
                img[i, r, c, :2] = pair
    targets = np.stack([(img[i, ..., 0] == goals[w][1]) & (img[i, ..., 1] == goals[w][0])
                        for i, w in enumerate(which)])  # fmt: skip
    missions = np.array([_tokens(goals[w]) for w in which])
    return (torch.from_numpy(img), torch.from_numpy(missions), torch.from_numpy(targets),
            torch.from_numpy(faced), torch.from_numpy(which))  # fmt: skip


@pytest.mark.slow
def test_factored_attention_generalises_to_held_out_combinations() -> None:
    """800 steps of 64 pairs, lr 2e-2 (~20 s on one busy core): OOD soft F1 ≥ 0.8 ≈ ID.

    One torch thread, as ``nox -s slow`` runs it. The rate is the highest measured to be
    insensitive to last-bit changes: at 3e-2 the run was chaotic — after any earlier
    in-process CLI call in the same pytest process the initial embeddings differed in the
    7th digit (LAPACK's QR) and the run failed at F1 ≈ 0.1–0.5 in 2 of 3 seeds, while at 2e-2
    seeds 0–3 gave F1 0.84–0.88 with and without that perturbation.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train_and_check()
    finally:
        torch.set_num_threads(threads)


def _train_and_check() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = FactoredAttention(len(WORDS))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    for step in range(800):
        images, missions, _, faced, which = _rooms(rng, 64, ID_GOALS)
        labels = torch.from_numpy(np.arange(64) % 2 == 0).long()
        for i in range(1, 64, 2):  # negatives: the instruction of another trained goal
            other = (int(which[i]) + 1 + int(rng.integers(len(ID_GOALS) - 1))) % len(ID_GOALS)
            missions[i] = torch.tensor(_tokens(ID_GOALS[other]))
        mask = torch.zeros(64, 8, 8)
        mask[torch.arange(64), faced[:, 0], faced[:, 1]] = 1.0
        loss = interaction_loss(model(images, missions).logits, mask, labels)
        loss = loss + l1_weight(step, 20, 100) * model.penalty()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        id_images, id_missions, id_targets, _, _ = _rooms(rng, 200, ID_GOALS)
        ood_images, ood_missions, ood_targets, _, _ = _rooms(rng, 200, OOD_GOALS)
        id_f1 = goal_metrics(model(id_images, id_missions).logits, id_targets)["vsf1"]
        ood_f1 = goal_metrics(model(ood_images, ood_missions).logits, ood_targets)["vsf1"]
        check = sparsity_summary(model.word_attribute_correlations().numpy(), list(WORDS))
    assert ood_f1 >= 0.8, (id_f1, ood_f1)
    assert abs(ood_f1 - id_f1) < 0.05, (id_f1, ood_f1)
    assert check["content_words_correct"] == 9, check
