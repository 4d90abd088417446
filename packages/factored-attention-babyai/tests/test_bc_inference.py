"""Eval-only rollout sessions of the BC policies equal their plain forward (spec §6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factored_attention_babyai.bench import reference_rollout
from factored_attention_babyai.evaluate import rollout
from factored_attention_babyai.train_bc import build_policy

from .conftest import random_frames


def _perturbed(model: str) -> torch.nn.Module:
    """A fresh policy with non-trivial batch-norm statistics and affine parameters, in eval."""
    torch.manual_seed(0)
    policy = build_policy(model)
    with torch.no_grad():
        for m in policy.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                assert m.running_mean is not None
                assert m.running_var is not None
                m.running_mean.normal_(0.0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_(0.0, 0.2)
    return policy.eval()


@pytest.mark.parametrize("model", ["film", "transformer"])
def test_session_equals_forward(model: str) -> None:
    policy = _perturbed(model)
    images, directions, missions = random_frames(24, seed=1)
    with torch.inference_mode():
        plain = policy(images, directions, missions)
        session = policy.rollout_session()  # type: ignore[operator]
        fast = session(images, directions, session.encode(missions))
    assert fast.shape == plain.shape == (24, 7)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    assert torch.equal(fast.argmax(-1), plain.argmax(-1))


def test_session_encodes_each_mission_independently() -> None:
    policy = _perturbed("transformer")
    _, _, missions = random_frames(6, seed=1)
    with torch.inference_mode():
        session = policy.rollout_session()  # type: ignore[operator]
        together = session.encode(missions)
        alone = torch.cat([session.encode(missions[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", ["film", "transformer"])
def test_session_rollout_equals_plain_and_reference(model: str) -> None:
    seeds = np.arange(3) + 10**6  # the bench's seeds (seed 0)
    torch.manual_seed(0)
    policy = build_policy(model)
    fast = rollout(policy, seeds, batch_size=2)
    assert policy.training  # rollout restores the mode it found
    plain = rollout(policy, seeds, batch_size=2, fast=False)
    slow = reference_rollout(policy, seeds)
    for other in (plain, slow):
        assert fast.length.tolist() == other.length.tolist()
        assert fast.success.tolist() == other.success.tolist()
        assert fast.missions == other.missions
