from __future__ import annotations

import torch

from ilpo.baselines import BCOSettings, evaluate_greedy, random_policy_return, run_bco, train_bc
from ilpo.synthetic import ShiftEnv, synthetic_transitions


def test_bc_imitates_the_demonstrator() -> None:
    data = synthetic_transitions(n=1024, seed=1, expert_prob=1.0)
    losses: list[float] = []
    model = train_bc(
        data.states,
        data.actions,
        3,
        epochs=15,
        batch_size=64,
        lr=2e-3,
        log=lambda e, m: losses.append(m["train/bc_loss"]),
    )
    assert len(losses) == 15
    assert losses[-1] < losses[0]
    mean, _ = evaluate_greedy(ShiftEnv, model, episodes=4, seed=0)
    rand, _ = random_policy_return(ShiftEnv, 3, episodes=4, seed=0)
    assert mean > rand + 5


def test_bco_curve_grid_and_idm_labels() -> None:
    data = synthetic_transitions(n=512, seed=2, expert_prob=0.75)
    settings = BCOSettings(
        steps=150, idm_steps=300, policy_steps=100, idm_lr=2e-3, heldout_episodes=2
    )
    logged: list[int] = []
    result = run_bco(
        data.states, data.next_states, ShiftEnv, settings, seed=0, log=lambda t, m: logged.append(t)
    )
    assert [t for t, _ in result.curve] == [0, 50, 100]
    assert logged == [0, 50, 100, 150]
    assert result.final_heldout is not None
    with torch.no_grad():
        labels = result.idm(torch.cat([data.states, data.next_states], 1)).argmax(1)
    assert (labels == data.actions).float().mean() > 0.95
