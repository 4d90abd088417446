"""Masking module: the faced cell, the losses of §4.2, and that L_img teaches π the faced cell."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from factored_attention_babyai.models.masking import (
    MaskModule,
    faced_cell,
    image_loss,
    image_match,
    interaction_loss,
    mask_entropy,
)

DELTAS = ((0, 1), (1, 0), (0, -1), (-1, 0))
STEPS = 250


def _room(gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` 8×8 rooms with the agent facing an object (a final demo frame).

    Returns images [n, 8, 8, 3], directions [n], faced (type, colour) [n, 2].
    """
    images = torch.zeros(n, 8, 8, 3, dtype=torch.long)
    images[..., 0] = 1  # empty
    images[:, [0, -1], :, :2] = torch.tensor([2, 5])  # walls
    images[:, :, [0, -1], :2] = torch.tensor([2, 5])
    directions = torch.randint(0, 4, (n,), generator=gen)
    faced = torch.zeros(n, 2, dtype=torch.long)
    for i in range(n):
        cells = torch.randperm(36, generator=gen)
        for cell in cells[:5].tolist():  # distractors
            r, c = 1 + cell // 6, 1 + cell % 6
            images[i, r, c, 0] = 5 + int(torch.randint(0, 3, (1,), generator=gen))
            images[i, r, c, 1] = int(torch.randint(0, 6, (1,), generator=gen))
        while True:  # agent on an interior cell whose faced cell is interior too
            r, c = (
                1 + int(torch.randint(0, 6, (1,), generator=gen)),
                1 + int(torch.randint(0, 6, (1,), generator=gen)),
            )
            dr, dc = DELTAS[int(directions[i])]
            if 1 <= r + dr <= 6 and 1 <= c + dc <= 6:
                break
        images[i, r, c] = torch.tensor([10, 0, 1])
        t, col = (
            5 + int(torch.randint(0, 3, (1,), generator=gen)),
            int(torch.randint(0, 6, (1,), generator=gen)),
        )
        images[i, r + dr, c + dc] = torch.tensor([t, col, 0])
        faced[i] = torch.tensor([t, col])
    return images, directions, faced


def _one_hot_factors(images: torch.Tensor) -> torch.Tensor:
    """Fixed factor embeddings: one-hot table rows, [B, 2, H, W, 17]."""
    types = F.one_hot(images[..., 0], 17).float()
    colours = F.one_hot(images[..., 1] + 11, 17).float()
    return torch.stack([types, colours], 1)


def test_faced_cell_for_every_direction() -> None:
    image = torch.zeros(4, 8, 8, 3, dtype=torch.long)
    image[:, 3, 5, 0] = 10  # agent at row 3, col 5
    got = faced_cell(image, torch.tensor([0, 1, 2, 3]))
    assert got.tolist() == [[3, 6], [4, 5], [3, 4], [2, 5]]


def test_mask_is_a_distribution_over_cells() -> None:
    torch.manual_seed(0)
    images, directions, _ = _room(torch.Generator().manual_seed(0), 4)
    pi = MaskModule()(images, directions)
    assert pi.shape == (4, 8, 8)
    torch.testing.assert_close(pi.sum((1, 2)), torch.ones(4))
    # Untrained (τ = b = 0, scores ≥ 0 after ReLU) entropy is at most log 64.
    assert 0 < mask_entropy(pi).item() <= math.log(64) + 1e-5


def test_interaction_loss_is_bce_of_mask_weighted_logsumexp() -> None:
    logits = torch.tensor([[[2.0, -1.0], [0.5, 3.0]]])
    mask = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    z = math.log((1 + 1e-6) * math.exp(2.0) + 1e-6 * (math.exp(-1) + math.exp(0.5) + math.exp(3)))
    for y in (0.0, 1.0):
        p = 1 / (1 + math.exp(-z))
        expected = -(y * math.log(p) + (1 - y) * math.log(1 - p))
        got = interaction_loss(logits, mask, torch.tensor([y]))
        assert abs(got.item() - expected) < 1e-5


def test_image_match_of_pooled_factors() -> None:
    images, _, _ = _room(torch.Generator().manual_seed(1), 2)
    factors = _one_hot_factors(images)
    mask = torch.zeros(2, 8, 8)
    mask[:, 0, 0] = 1.0  # both look at a wall cell: identical factors
    torch.testing.assert_close(image_match(mask, mask, factors, factors), torch.ones(2))
    other = torch.zeros(2, 8, 8)
    other[:, 3, 3] = 1.0
    images[:, 3, 3, :2] = torch.tensor([2, 0])  # same type (wall), colour red ≠ grey
    factors2 = _one_hot_factors(images)
    torch.testing.assert_close(image_match(mask, other, factors, factors2), torch.zeros(2))
    assert image_loss(mask, mask, factors, factors, torch.ones(2)).item() == 0.0


def _pairs(gen: torch.Generator, n: int) -> tuple[torch.Tensor, ...]:
    """Pairs of final frames (even rows positive: the same object is faced in both)."""
    src, dsrc, fsrc = _room(gen, n)
    tgt, dtgt, _ = _room(gen, n)
    label = (torch.arange(n) % 2 == 0).long()
    cell = faced_cell(tgt, dtgt)
    for i in range(0, n, 2):
        tgt[i, cell[i, 0], cell[i, 1], :2] = fsrc[i]
    return src, dsrc, tgt, dtgt, label


def _one_hot_mask(cells: torch.Tensor) -> torch.Tensor:
    """[B, 2] (row, col) → [B, 8, 8] one-hot π."""
    return F.one_hot(cells[:, 0] * 8 + cells[:, 1], 64).float().reshape(-1, 8, 8)


def test_faced_cell_is_the_minimiser_of_the_image_loss() -> None:
    """L_img is 0 for π on the faced cell; the agent's own cell or a uniform π cannot reach it."""
    src, dsrc, tgt, dtgt, label = _pairs(torch.Generator().manual_seed(2), 64)
    fs, ft = _one_hot_factors(src), _one_hot_factors(tgt)
    faced = image_loss(
        _one_hot_mask(faced_cell(src, dsrc)), _one_hot_mask(faced_cell(tgt, dtgt)), fs, ft, label
    )
    agent = (src[..., 0] == 10).float(), (tgt[..., 0] == 10).float()
    at_agent = image_loss(agent[0], agent[1], fs, ft, label)
    uniform = torch.full((64, 8, 8), 1 / 64)
    spread = image_loss(uniform, uniform, fs, ft, label)
    # A few random negatives face the same object by chance (label noise): count them.
    noise = (
        (
            image_match(
                _one_hot_mask(faced_cell(src, dsrc)), _one_hot_mask(faced_cell(tgt, dtgt)), fs, ft
            )
            != label.float()
        )
        .float()
        .mean()
        .item()
    )
    assert faced.item() == pytest.approx(noise)
    assert noise < 0.1
    assert at_agent.item() >= 0.45  # every negative matches at the agent cell
    assert spread.item() > faced.item() + 0.1


@pytest.mark.slow
def test_image_loss_teaches_the_mask_the_faced_cell() -> None:
    """With L_img only (fixed one-hot factors), π peaks on the faced cell (250 steps, ~1.5 min)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    mask = MaskModule()
    optimizer = torch.optim.Adam(mask.parameters(), lr=1e-3)
    for _ in range(STEPS):
        src, dsrc, tgt, dtgt, label = _pairs(gen, 32)
        loss = image_loss(
            mask(src, dsrc), mask(tgt, dtgt), _one_hot_factors(src), _one_hot_factors(tgt), label
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    mask.eval()
    images, directions, _ = _room(torch.Generator().manual_seed(99), 200)
    with torch.no_grad():
        pi = mask(images, directions)
    argmax = pi.flatten(1).argmax(-1)
    cell = faced_cell(images, directions)
    hits = (argmax == cell[:, 0] * 8 + cell[:, 1]).float().mean().item()
    assert hits >= 0.9, hits


def test_row_forward_equals_the_plain_module() -> None:
    """forward (stem from table rows, blocks on cell rows) = forward_plain (convolutions):
    outputs, every parameter gradient and the batch-norm running statistics, in training
    and evaluation mode (float64)."""
    import copy

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    images, directions, _ = _room(gen, 24)
    images[:3] = 0  # padding frames (all-zero cells) occur in the planner's batches
    fast = MaskModule().double().train()
    with torch.no_grad():
        for p in fast.parameters():
            p.add_(0.1 * torch.randn_like(p))
    plain = copy.deepcopy(fast)
    a, b = fast(images, directions), plain.forward_plain(images, directions)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    w = torch.randn_like(a)
    (a * w).sum().backward()
    (b * w).sum().backward()
    for (name, p), q in zip(fast.named_parameters(), plain.parameters(), strict=True):
        assert p.grad is not None
        assert q.grad is not None
        scale = q.grad.abs().max().item()
        assert (p.grad - q.grad).abs().max().item() <= 1e-9 * scale + 1e-12, name
    for (name, x), y in zip(fast.named_buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12, msg=name)
    fast.eval()
    plain.eval()
    torch.testing.assert_close(
        fast(images, directions), plain.forward_plain(images, directions), rtol=1e-10, atol=1e-12
    )
