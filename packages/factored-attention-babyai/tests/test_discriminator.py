"""Discriminator: pair sampling (§4.3), losses' gradient routing (§4.2), validation metrics,
top-k bookkeeping and the one interaction-checkpoint format (§7, §9 items 3–4)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from compkit_utils.checkpoints import load_checkpoint, make_state, save_checkpoint
from compkit_utils.errors import UserError
from factored_attention_babyai.disc_core import (
    Discriminator,
    GoalDemos,
    discriminator_losses,
    goal_metrics,
    sample_pairs,
)
from factored_attention_babyai.discriminator import TopK
from factored_attention_babyai.interaction_io import (
    load_interaction,
    resolve_checkpoint,
    to_interaction_state,
)
from factored_attention_babyai.vocab import WORDS


def _tagged_demos(goals: int = 5, per_goal: int = 4, tmax: int = 9) -> GoalDemos:
    """Frames tagged with (goal, demo, t) in cell (0, 0); lengths 3..tmax."""
    images = np.zeros((goals, per_goal, tmax, 8, 8, 3), dtype=np.uint8)
    g, d, t = np.meshgrid(np.arange(goals), np.arange(per_goal), np.arange(tmax), indexing="ij")
    images[..., 0, 0, 0], images[..., 0, 0, 1], images[..., 0, 0, 2] = g, d, t
    directions = (t % 4).astype(np.int64)
    lengths = 3 + (np.arange(goals * per_goal).reshape(goals, per_goal) % (tmax - 2))
    missions = np.stack([np.full(5, 100 + i) for i in range(goals)])
    return GoalDemos(images, directions, lengths, missions)


def test_pair_sampling_follows_appendix_d() -> None:
    demos = _tagged_demos()
    batch = sample_pairs(demos, np.random.default_rng(0), 4000)
    tag_s = batch.src_images[:, 0, 0].numpy().astype(int)
    tag_t = batch.tgt_images[:, 0, 0].numpy().astype(int)
    labels = batch.labels.numpy()
    assert (labels[0::2] == 1).all()
    assert (labels[1::2] == 0).all()
    final = demos.lengths - 1
    # Sources: the final frame of D1 of goal G, whose mission is used; shared within a pair.
    assert (tag_s[:, 2] == final[tag_s[:, 0], tag_s[:, 1]]).all()
    assert (batch.missions[:, 0].numpy() == 100 + tag_s[:, 0]).all()
    assert (tag_s[0::2] == tag_s[1::2]).all()
    assert (batch.src_directions.numpy() == tag_s[:, 2] % 4).all()
    assert (batch.tgt_directions.numpy() == tag_t[:, 2] % 4).all()
    pos_s, pos_t = tag_s[0::2], tag_t[0::2]
    # Positives: another demo of the same goal, at its final frame.
    assert (pos_t[:, 0] == pos_s[:, 0]).all()
    assert (pos_t[:, 1] != pos_s[:, 1]).all()
    assert (pos_t[:, 2] == final[pos_t[:, 0], pos_t[:, 1]]).all()
    neg_s, neg_t = tag_s[1::2], tag_t[1::2]
    null = neg_t[:, 0] == neg_s[:, 0]
    # Null goals: a non-final frame of D1 itself, with probability 1/#goals.
    assert (neg_t[null, 1] == neg_s[null, 1]).all()
    assert (neg_t[null, 2] < final[neg_t[null, 0], neg_t[null, 1]]).all()
    assert abs(null.mean() - 1 / 5) < 0.03
    # Otherwise the final frame of a demo of another goal, all other goals about equally often.
    other = neg_t[~null]
    assert (other[:, 2] == final[other[:, 0], other[:, 1]]).all()
    assert set(np.unique(other[:, 0])) == set(range(5))
    # Same RNG state, same batch (resume draws the same pairs).
    again = sample_pairs(demos, np.random.default_rng(0), 4000)
    assert torch.equal(again.tgt_images, batch.tgt_images)


def test_goal_metrics_by_hand() -> None:
    logits = torch.full((2, 2, 2), -50.0)
    targets = torch.zeros(2, 2, 2, dtype=torch.bool)
    logits[0, 0, 0] = 50.0
    targets[0, 0, 0] = True  # image 0: exact
    logits[1, 0, 0] = 0.0  # image 1: σ = 0.5 on a non-target, target missed
    targets[1, 1, 1] = True
    m = goal_metrics(logits, targets)
    assert m["vsprec"] == pytest.approx(0.5, abs=1e-6)  # (1 + 0) / 2
    assert m["vsrecall"] == pytest.approx(0.5, abs=1e-6)
    assert m["vsf1"] == pytest.approx(0.5, abs=1e-6)
    # pos_weight = 4 cells: the missed target costs 4·50, the σ = 0.5 cell log 2.
    expected = (4 * 50 + math.log(2)) / 8
    assert m["vtarget"] == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("name", ["independent", "transformer"])
def test_losses_train_interaction_and_mask_separately(name: str) -> None:
    torch.manual_seed(0)
    demos = _tagged_demos()
    demos.images[..., 1:, 1:, 0] = 5  # a few keys, so the interaction model has features
    missions = np.tile(np.array([6, 13, 12, 11, 9]), (demos.n_goals, 1))
    demos = GoalDemos(demos.images, demos.directions, demos.lengths, missions)
    batch = sample_pairs(demos, np.random.default_rng(1), 8)
    disc = Discriminator(name, len(WORDS))
    losses = discriminator_losses(disc, batch)
    losses.bce.backward(retain_graph=True)
    assert all(p.grad is None for p in disc.mask.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in disc.model.parameters())
    disc.zero_grad(set_to_none=True)
    losses.timg.backward()
    assert all(p.grad is None for p in disc.model.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in disc.mask.parameters())
    assert (losses.l1c is None) == (name == "transformer")
    assert 0 < losses.me.item() <= math.log(64) + 1e-5


def test_top_k_keeps_the_best(tmp_path: Path) -> None:
    top = TopK(tmp_path / "best", tmp_path / "best_k_models.yaml", 2)
    for step, score in [(1, 0.1), (2, 0.5), (3, 0.3), (4, 0.05), (5, 0.9)]:
        top.offer(step, score, lambda: {"format_version": 1, "step": 0, "model": {}})
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == [
        "step_000002.pt",
        "step_000005.pt",
    ]
    assert (tmp_path / "best_k_models.yaml").read_text() == (
        "step_000005.pt: 0.9\nstep_000002.pt: 0.5\n"
    )
    assert top.best() == tmp_path / "best" / "step_000005.pt"


def _disc_checkpoint(path: Path, name: str = "independent", words: tuple = WORDS) -> Discriminator:
    torch.manual_seed(3)
    disc = Discriminator(name, len(words))
    extra = {"kind": "discriminator", "interaction_model": name, "words": list(words)}
    save_checkpoint(path, make_state(step=7, model=disc, extra=extra))
    return disc


def test_interaction_checkpoint_round_trip_from_either_form(tmp_path: Path) -> None:
    disc = _disc_checkpoint(tmp_path / "last.pt")
    state = load_checkpoint(tmp_path / "last.pt")
    exported = to_interaction_state(state, "last.pt")
    assert not any(k.startswith(("mask.", "model.")) for k in exported["model"])
    assert exported["optimizer"] is None
    save_checkpoint(tmp_path / "interaction.pt", exported)
    image = torch.randint(0, 6, (2, 8, 8, 3))
    mission = torch.randint(0, 15, (2, 5))
    disc.eval()
    expected = disc.model(image, mission).logits
    for path in (tmp_path / "last.pt", tmp_path / "interaction.pt", tmp_path):
        model, _ = load_interaction(path, expect_model="independent", words=WORDS)
        torch.testing.assert_close(model(image, mission).logits, expected)


def test_interaction_checkpoint_refusals(tmp_path: Path) -> None:
    _disc_checkpoint(tmp_path / "film.pt", name="film")
    with pytest.raises(UserError, match="holds a 'film' interaction model"):
        load_interaction(tmp_path / "film.pt", expect_model="independent", words=WORDS)
    _disc_checkpoint(tmp_path / "words.pt", words=(*WORDS, "extra"))
    with pytest.raises(UserError, match="another vocabulary"):
        load_interaction(tmp_path / "words.pt", expect_model="independent", words=WORDS)
    save_checkpoint(
        tmp_path / "bc.pt",
        {
            "format_version": 1,
            "step": 1,
            "model": {},
            "extra": {"kind": "factored-attention-babyai-bc"},
        },
    )
    with pytest.raises(UserError, match="not a train-discriminator or interaction checkpoint"):
        load_interaction(tmp_path / "bc.pt")


def test_transformer_learning_rate_schedule() -> None:
    from factored_attention_babyai.discriminator import lr_multiplier

    assert lr_multiplier(0, 10_000, "independent") == 1.0
    assert lr_multiplier(9_999, 10_000, "film") == 1.0
    assert lr_multiplier(0, 10_000, "transformer") == pytest.approx(1 / 2000)
    assert lr_multiplier(999, 10_000, "transformer") == pytest.approx(0.5)
    assert lr_multiplier(5_000, 10_000, "transformer") == pytest.approx(0.1)
    assert lr_multiplier(10_000, 10_000, "transformer") == pytest.approx(0.01)


def test_a_sweep_folder_resolves_to_the_matching_run(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for per_goal in (50, 250):
        for seed in (0, 1):
            run = sweep / f"per-goal={per_goal}__seed={seed}"
            run.mkdir(parents=True)
            config = {"per_goal": per_goal, "seed": seed, "model": "independent"}
            (run / "config.json").write_text(json.dumps(config))
            if (per_goal, seed) != (250, 1):
                _disc_checkpoint(run / "interaction.pt")
    (sweep / "sweep.json").write_text("{}")
    file = resolve_checkpoint(sweep, {"per_goal": 250, "seed": 0})
    assert file == sweep / "per-goal=250__seed=0" / "interaction.pt"
    _, state = load_interaction(sweep, words=WORDS, match={"per_goal": 50, "seed": 1})
    assert state["extra"]["loaded_from"] == str(sweep / "per-goal=50__seed=1" / "interaction.pt")
    with pytest.raises(UserError, match=r"has no interaction\.pt yet"):
        resolve_checkpoint(sweep, {"per_goal": 250, "seed": 1})
    with pytest.raises(UserError, match="no train-discriminator run with per_goal=1000, seed=0"):
        resolve_checkpoint(sweep, {"per_goal": 1000, "seed": 0})
    with pytest.raises(UserError, match="is a sweep folder"):
        resolve_checkpoint(sweep)
