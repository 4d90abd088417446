"""A straightforward stage-1 training step, the baseline of `bench_pretrain_step`.

Written the obvious way: the decoder runs one GRU step at a time with a per-program Python
grammar automaton (`leaps_karel.learn.grammar.GrammarState` of batch 1 per program) building the
masks; the executor runs one step at a time over every demo, with its input states produced by
stepping one `leaps_karel.world.World` per demo in Python for all 99 steps. Same losses and
model as `leaps_karel.learn.pretrain`; used only for timing.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from torch import Tensor

from leaps_karel.learn.grammar import GrammarState
from leaps_karel.learn.losses import kl_loss, sequence_loss
from leaps_karel.learn.model import END_ACTION, ProgramVAE, mask_logits
from leaps_karel.learn.pretrain_config import Variant
from leaps_karel.world import World

__all__ = ["reference_step"]


def _masks(ids: Tensor) -> Tensor:
    rows = []
    for program in ids.tolist():
        state = GrammarState(1)
        masks = []
        for tok in program[:-1]:
            state.step(torch.tensor([tok]))
            masks.append(state.allowed()[0])
        rows.append(torch.stack(masks))
    return torch.stack(rows)


def _cell(gru: torch.nn.GRU, x: Tensor, hidden: Tensor) -> Tensor:
    """One step of a single-layer ``nn.GRU`` (its own weights) on ``[N, in]`` inputs."""
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    w_ih, w_hh, b_ih, b_hh = (cast(Tensor, getattr(gru, n)) for n in names)
    return torch.gru_cell(x, hidden, w_ih, w_hh, b_ih, b_hh)


def _decode_teacher(model: ProgramVAE, z: Tensor, ids: Tensor) -> Tensor:
    masks = _masks(ids)
    hidden = z
    gru = cast(torch.nn.GRU, model.decoder["gru"])
    logits = []
    for t in range(ids.shape[1] - 1):
        emb = model.decoder["embed"](ids[:, t])
        hidden = _cell(gru, torch.cat([emb, z], -1), hidden)
        out = model.decoder["head"](torch.cat([hidden, emb, z], -1))
        logits.append(mask_logits(out, masks[:, t]))
    return torch.stack(logits, 1)


def _world(state: np.ndarray) -> World:
    return World.from_tensor(state.transpose(1, 2, 0).astype(bool))


def reference_step(
    model: ProgramVAE,
    opt: torch.optim.Optimizer,
    batch: dict[str, Tensor],
    variant: Variant,
    kl_coef: float,
) -> float:
    """One supervised Adam step computed the straightforward way; returns the loss."""
    ids = batch["ids"]
    mu, log_sigma = model.encode(ids, batch["lengths"])
    z = model.sample_z(mu, log_sigma)
    program, _ = sequence_loss(_decode_teacher(model, z, ids), ids[:, 1:], 50)
    total = program + kl_coef * kl_loss(mu, log_sigma)
    if variant.executor_loss > 0:
        b, d = batch["actions"].shape[:2]
        steps = model.cfg.executor_steps
        s0 = batch["s0"].reshape(b * d, *batch["s0"].shape[2:])
        actions = torch.full((b * d, steps), END_ACTION, dtype=torch.long)
        width = min(steps, batch["actions"].shape[2])
        actions[:, :width] = batch["actions"].reshape(b * d, -1)[:, :width]
        worlds = [_world(s.numpy()) for s in s0]
        ex = model.executor
        hidden = z.repeat_interleave(d, 0)
        zr = hidden
        prev = torch.full((b * d,), END_ACTION, dtype=torch.long)
        logits = []
        for t in range(steps):
            if variant.environment_states:
                states = torch.stack(
                    [torch.as_tensor(w.to_tensor().transpose(2, 0, 1)) for w in worlds]
                ).float()
            else:
                states = s0
            x = torch.cat([zr, ex.state_encoder(states), ex.action_embed(prev)], -1)
            hidden = _cell(ex.gru, x, hidden)
            logits.append(ex.head(hidden))
            prev = actions[:, t]
            for w, a in zip(worlds, prev.tolist(), strict=True):
                w.step(a)
        loss, _ = sequence_loss(torch.stack(logits, 1), actions, END_ACTION)
        total = total + variant.executor_loss * loss
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    return total.item()
