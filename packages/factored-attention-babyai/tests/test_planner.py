"""Planner pieces: the §5.4 loss by hand, returns, batches, the frozen interaction model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factored_attention_babyai.bc_data import BcData
from factored_attention_babyai.models.interaction import build_interaction
from factored_attention_babyai.planner import (
    MVPropPlanner,
    PlannerOutput,
    batch_index,
    frame_returns,
    planner_batch,
    planner_loss,
)


def test_loss_by_hand() -> None:
    q = torch.tensor([[0.5, 0.2, 0, 0, 0, 0, 0], [0, 0, 0.9, 0, 0, 0, 0.3], [9.0] * 7])
    value = torch.zeros(3, 2, 2)
    value[0] = 1.0  # V² mean 1 on frame 0, 0 on frame 1, 4 on the padding frame (weight 3)
    value[2] = 2.0
    out = PlannerOutput(q, value, torch.zeros(3, 2, 2), torch.zeros(3, 2, 2))
    actions = torch.tensor([0, 2, 0])
    returns = torch.tensor([0.9, 1.0, 0.0])
    valid = torch.tensor([True, True, False])
    weights = torch.tensor([1.0, 1.0, 3.0])
    loss, parts = planner_loss(out, actions, returns, valid, weights, reg_weight=0.5)
    path = ((0.5 - 0.9) ** 2 + (0.9 - 1.0) ** 2) / 2
    reg = (0.2**2 + 0.3**2) / 12  # the 6 non-demonstrated actions of 2 valid frames
    vreg = (1 * 1 + 0 + 3 * 4) / 5
    assert parts["path"].item() == pytest.approx(path)
    assert parts["reg"].item() == pytest.approx(reg)
    assert parts["vreg"].item() == pytest.approx(vreg)
    assert loss.item() == pytest.approx(path + 0.5 * (reg + vreg))


def test_returns_and_batches_line_up() -> None:
    np.testing.assert_allclose(frame_returns(np.array([2, 3]), 0.9), [0.9, 1, 0.81, 0.9, 1])
    n, tmax = 3, 4
    lengths = np.array([2, 4, 3])
    images = np.zeros((n, tmax, 8, 8, 3), dtype=np.uint8)
    actions = np.zeros((n, tmax), dtype=np.int64)
    for i, length in enumerate(lengths):
        actions[i, :length] = np.arange(length) + 10 * i
    data = BcData(
        images=images, directions=np.zeros((n, tmax), np.int64), actions=actions,
        lengths=lengths, missions=np.ones((n, 5), np.int64), id_seeds=np.array([1]),
        ood_seeds=np.array([2]), source="test",
    )  # fmt: skip
    batch = planner_batch(data, np.array([0, 1, 2]), 0.9, torch.device("cpu"))
    valid = batch["valid"].numpy()
    assert valid.tolist() == [True] * 9 + [False, False]  # two demos shorter than Tmax
    np.testing.assert_allclose(
        batch["returns"].numpy()[valid], [0.9, 1, 0.729, 0.81, 0.9, 1, 0.81, 0.9, 1], rtol=1e-6
    )
    assert batch["actions"].numpy()[valid].tolist() == [0, 1, 10, 11, 12, 13, 20, 21, 22]
    assert batch["weights"].numpy().tolist() == [1] * 9 + [2, 1]
    # Every demo once per epoch, reshuffled per epoch.
    epoch = np.concatenate([batch_index(10, 4, 0, s) for s in range(3)])
    assert sorted(epoch.tolist()) == list(range(10))
    assert not np.array_equal(batch_index(10, 4, 0, 3), batch_index(10, 4, 0, 0))


@pytest.mark.parametrize("k", [0, 10])
def test_interaction_model_is_frozen(k: int) -> None:
    torch.manual_seed(0)
    interaction = build_interaction("independent", 15)
    before = {key: v.clone() for key, v in interaction.state_dict().items()}
    planner = MVPropPlanner(interaction, k=k).train()
    assert not planner.interaction.training
    assert planner.mvprop.training
    trainable = {id(p) for p in planner.trainable_parameters()}
    assert not trainable & {id(p) for p in interaction.parameters()}
    images = torch.randint(0, 6, (4, 8, 8, 3), dtype=torch.uint8)
    out = planner.maps(images, torch.tensor([0, 1, 2, 3]), torch.randint(0, 15, (4, 5)))
    assert out.q.shape == (4, 7)
    if k == 0:
        assert bool((out.value == 0).all())  # the Factored/CNN ablation: no propagation
    optimizer = torch.optim.Adam(planner.trainable_parameters(), lr=0.1)
    out.q.sum().backward()
    optimizer.step()
    assert all(p.grad is None for p in interaction.parameters())
    for key, value in interaction.state_dict().items():
        torch.testing.assert_close(value, before[key])


@pytest.mark.slow
def test_bench_steps_match_their_references() -> None:
    """The timed steps compute the references' losses (~20 s: the Q-network's 3×3 conv)."""
    from factored_attention_babyai.bench_steps import bench_discriminator_step, bench_planner_step

    planner = bench_planner_step(batch_size=3, k=2, repeats=1)
    assert planner["loss_match"]
    assert planner["frames"] < planner["padded_frames"]
    assert planner["ours_ms"] > 0
    assert planner["reference_ms"] > 0
    disc = bench_discriminator_step(batch_size=8, repeats=1)
    assert disc["loss_match"]
    assert disc["speedup"] > 0


@pytest.mark.parametrize("name", ["film", "transformer", "simple"])
def test_factored_q_network_path_for_every_interaction_model(name: str) -> None:
    torch.manual_seed(0)
    planner = MVPropPlanner(build_interaction(name, 15), k=3)
    images = torch.randint(0, 6, (3, 8, 8, 3), dtype=torch.uint8)
    images[..., 0] = torch.randint(0, 11, (3, 8, 8), dtype=torch.uint8)
    args = (images, torch.tensor([0, 2, 3]), torch.randint(0, 15, (3, 5)))
    fast = planner.maps(*args).q
    torch.testing.assert_close(fast, planner.maps(*args, factored=False).q, rtol=1e-5, atol=1e-6)


def test_forward_without_gradients_runs_in_chunks_with_the_same_q_values() -> None:
    from factored_attention_babyai import planner as planner_module

    torch.manual_seed(0)
    planner = MVPropPlanner(build_interaction("independent", 15), k=3).eval()
    n = 2 * planner_module.EVAL_CHUNK + 5  # two full chunks and a remainder
    images = torch.randint(0, 6, (n, 8, 8, 3), dtype=torch.uint8)
    images[..., 0] = torch.randint(0, 11, (n, 8, 8), dtype=torch.uint8)
    args = (images, torch.randint(0, 4, (n,)), torch.randint(0, 15, (n, 5)))
    whole = planner.maps(*args).q.detach()  # one batch, gradients on
    calls: list[int] = []
    maps = planner.maps
    planner.maps = lambda *a, **k: calls.append(len(a[0])) or maps(*a, **k)  # type: ignore[method-assign]
    with torch.inference_mode():
        chunked = planner(*args)
    assert calls == [planner_module.EVAL_CHUNK, planner_module.EVAL_CHUNK, 5]
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
