"""Timed training steps of part 2 against straightforward references (for ``bench``).

* :func:`bench_discriminator_step` — one ``train-discriminator`` step (both states of every
  pair through the interaction model and the masking module in one batch each) against the
  reference that runs source and target states separately (four forward passes, as written in
  the original harness).
* :func:`bench_planner_step` — one ``train-planner`` step (valid frames plus one weighted
  padding frame per demo; the Q-network's first convolution from attribute-table rows)
  against the reference that pushes all B×Tmax padded frames through the plain network, as
  the original did. Both give the same loss; the function checks it.

Inputs are synthetic (random rooms, demo lengths 7…26 like the dataset's), so no dataset or
environment is needed. Each returns a dict of the median milliseconds per step (ours and the
reference measured alternately) and the speed-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def _time_pair(
    ours: Callable[[], Any], reference: Callable[[], Any], repeats: int
) -> tuple[float, float]:
    """Median milliseconds of each, measured alternately (a busy machine affects both alike)."""
    ours()
    reference()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((ours, times[0]), (reference, times[1])):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times[0])), float(np.median(times[1]))


def _synthetic_demos(n_goals: int, per_goal: int, seed: int) -> Any:
    """A GoalDemos of random rooms (walls, 8 objects, the agent) with lengths 7…26."""
    from factored_attention_babyai.disc_core import GoalDemos

    rng = np.random.default_rng(seed)
    tmax = 26
    shape = (n_goals, per_goal, tmax)
    images = np.zeros((*shape, 8, 8, 3), dtype=np.uint8)
    images[..., 0] = 1
    images[..., [0, -1], :, :2] = (2, 5)
    images[..., :, [0, -1], :2] = (2, 5)
    rows, cols = rng.integers(1, 7, (2, *shape, 9))
    kinds = rng.integers(5, 8, (*shape, 9))
    colours = rng.integers(0, 6, (*shape, 9))
    g, d, t = np.indices(shape)
    for j in range(9):
        cell = images[g, d, t, rows[..., j], cols[..., j]]
        cell[..., 0] = 10 if j == 8 else kinds[..., j]
        cell[..., 1] = 0 if j == 8 else colours[..., j]
        images[g, d, t, rows[..., j], cols[..., j]] = cell
    lengths = np.minimum(7 + rng.geometric(0.35, (n_goals, per_goal)), tmax)
    padding = t >= lengths[..., None]
    images[padding] = 0  # zero padding, as in the dataset
    directions = np.where(padding, 0, rng.integers(0, 4, shape))
    missions = np.stack([[6, 13, 12, 3 + i % 6, 9] for i in range(n_goals)])
    return GoalDemos(images, directions, lengths, missions)


def bench_discriminator_step(
    model: str = "independent", batch_size: int = 256, repeats: int = 3, device: str = "cpu"
) -> dict[str, Any]:
    """Time one discriminator step (forward, backward, Adam) vs the four-pass reference.

    Returns:
        ``{"what", "model", "batch_size", "device", "ours_ms", "reference_ms", "speedup",
        "loss_match"}``.
    """
    from factored_attention_babyai.disc_core import (
        Discriminator,
        discriminator_losses,
        sample_pairs,
    )
    from factored_attention_babyai.models.masking import image_loss, interaction_loss

    torch.manual_seed(0)
    dev = torch.device(device)
    demos = _synthetic_demos(24, 8, seed=0)
    batch = sample_pairs(demos, np.random.default_rng(0), batch_size // 2)
    batch = type(batch)(*(t.to(dev) for t in batch))
    disc = Discriminator(model, 15).to(dev).train()
    optimizer = torch.optim.Adam(disc.parameters(), lr=1e-4)

    def ours_loss() -> torch.Tensor:
        losses = discriminator_losses(disc, batch)
        return losses.bce + losses.timg

    def reference_loss() -> torch.Tensor:
        out_s = disc.model(batch.src_images, batch.missions)
        out_t = disc.model(batch.tgt_images, batch.missions)
        pi_s = disc.mask.forward_plain(batch.src_images, batch.src_directions)
        pi_t = disc.mask.forward_plain(batch.tgt_images, batch.tgt_directions)
        bce = interaction_loss(out_t.logits, pi_t.detach(), batch.labels)
        timg = image_loss(pi_s, pi_t, out_s.factors.detach(), out_t.factors.detach(), batch.labels)
        return bce + timg

    def train_step(loss_fn: Callable[[], torch.Tensor]) -> None:
        loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    disc.eval()  # batch-norm statistics differ between one and two batches: compare in eval
    with torch.no_grad():
        match = bool(torch.allclose(ours_loss(), reference_loss(), rtol=1e-4, atol=1e-5))
    disc.train()
    ours_ms, ref_ms = _time_pair(
        lambda: train_step(ours_loss), lambda: train_step(reference_loss), repeats
    )
    return {
        "what": "discriminator step", "model": model, "batch_size": batch_size,
        "device": str(dev), "ours_ms": ours_ms, "reference_ms": ref_ms,
        "speedup": ref_ms / ours_ms, "loss_match": match,
    }  # fmt: skip


def bench_planner_step(
    batch_size: int = 32, k: int = 10, repeats: int = 5, device: str = "cpu"
) -> dict[str, Any]:
    """Time one planner step (forward, backward, Adam) vs the all-padded-frames reference.

    Returns:
        ``{"what", "batch_size", "k", "frames", "padded_frames", "device", "ours_ms",
        "reference_ms", "speedup", "loss_match"}``.
    """
    from factored_attention_babyai.bc_data import BcData
    from factored_attention_babyai.models.interaction import build_interaction
    from factored_attention_babyai.planner import MVPropPlanner, planner_batch, planner_loss

    torch.manual_seed(0)
    dev = torch.device(device)
    demos = _synthetic_demos(1, batch_size, seed=1)
    data = BcData(
        images=demos.images[0], directions=demos.directions[0],
        actions=np.random.default_rng(2).integers(0, 3, demos.directions[0].shape),
        lengths=demos.lengths[0], missions=np.repeat(demos.missions, batch_size, 0),
        id_seeds=np.zeros(0, np.int64), ood_seeds=np.zeros(0, np.int64), source="synthetic",
    )  # fmt: skip
    planner = MVPropPlanner(build_interaction("independent", 15), k=k).to(dev).train()
    optimizer = torch.optim.Adam(planner.trainable_parameters(), lr=1e-3)
    index = np.arange(batch_size)
    batch = planner_batch(data, index, 0.9, dev)
    n, tmax = batch_size, data.images.shape[1]
    valid_full = torch.from_numpy(np.arange(tmax)[None, :] < data.lengths[:, None]).reshape(-1)
    returns_full = torch.zeros(n, tmax)
    for i, length in enumerate(data.lengths.tolist()):
        returns_full[i, :length] = torch.from_numpy(0.9 ** np.arange(length - 1, -1, -1))
    full = {
        "images": torch.from_numpy(data.images).reshape(-1, 8, 8, 3).to(dev),
        "directions": torch.from_numpy(data.directions).reshape(-1).to(dev),
        "missions": torch.from_numpy(data.missions).repeat_interleave(tmax, 0).to(dev),
        "actions": torch.from_numpy(data.actions).reshape(-1).to(dev),
        "returns": returns_full.reshape(-1).to(dev),
        "valid": valid_full.to(dev),
        "weights": torch.ones(n * tmax, device=dev),
    }

    def step(b: dict[str, torch.Tensor], factored: bool = True) -> torch.Tensor:
        out = planner.maps(b["images"], b["directions"], b["missions"], factored=factored)
        loss, _ = planner_loss(out, b["actions"], b["returns"], b["valid"], b["weights"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss.detach()

    match = bool(torch.allclose(step(batch), step(full, False), rtol=1e-4, atol=1e-6))
    ours_ms, ref_ms = _time_pair(
        lambda: (step(batch), optimizer.step()),
        lambda: (step(full, False), optimizer.step()),
        repeats,
    )
    return {
        "what": "planner step", "batch_size": batch_size, "k": k,
        "frames": len(batch["valid"]), "padded_frames": n * tmax, "device": str(dev),
        "ours_ms": ours_ms, "reference_ms": ref_ms, "speedup": ref_ms / ours_ms,
        "loss_match": match,
    }  # fmt: skip
