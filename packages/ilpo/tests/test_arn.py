from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ilpo.arn import VectorARN, choose_actions, label_vector
from ilpo.lpn import VectorLPN, lpn_losses, make_optimizer, train_step
from ilpo.online import OnlineSettings, read_curve_csv, run_online, write_curve_csv
from ilpo.synthetic import SHIFTS, ShiftEnv, synthetic_transitions


@pytest.fixture(scope="module")
def trained_lpn() -> tuple[VectorLPN, dict[int, int]]:
    """An LPN trained on the shift system and its action → latent map (from the min latent)."""
    torch.manual_seed(0)
    data = synthetic_transitions(n=2048, seed=0, expert_prob=0.75)
    model = VectorLPN(state_dim=3, n_latent=len(SHIFTS), ngf=32)
    opt = make_optimizer(model, lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        idx = torch.randint(0, len(data.states), (64,), generator=gen)
        train_step(model, opt, data.states[idx], data.next_states[idx])
    with torch.no_grad():
        logits, deltas = model(data.states)
        best = lpn_losses(logits, deltas, data.next_states - data.states).best
    mapping = {a: int(torch.bincount(best[data.actions == a]).argmax()) for a in range(3)}
    assert sorted(mapping.values()) == [0, 1, 2]
    return model, mapping


def test_label_vector_picks_the_closest_prediction() -> None:
    s = torch.zeros(2, 2)
    deltas = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])
    s_next = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    assert label_vector(s, s_next, deltas).tolist() == [0, 1]
    # Scaling the distance per dimension can change the choice (spec §7.7).
    s_next = torch.tensor([[0.8, 0.6], [0.8, 0.6]])
    assert label_vector(s, s_next, deltas).tolist() == [0, 0]
    assert label_vector(s, s_next, deltas, scale=torch.tensor([1.0, 0.1])).tolist() == [1, 1]


def test_arn_all_latents_matches_per_latent_calls() -> None:
    torch.manual_seed(0)
    arn = VectorARN(state_dim=4, n_latent=3, n_actions=2, ngf=8)
    s = torch.randn(5, 4)
    every = arn.all_latents(s)
    assert every.shape == (5, 3, 2)
    for z in range(3):
        torch.testing.assert_close(every[:, z], arn(s, torch.full((5,), z)))


def test_arn_parameter_count_matches_the_original() -> None:
    assert sum(p.numel() for p in VectorARN(4, 2, 2).parameters()) == 69_410


def test_acting_modes() -> None:
    torch.manual_seed(0)
    arn = VectorARN(state_dim=4, n_latent=2, n_actions=3, ngf=8)
    s = torch.randn(6, 4)
    probs = torch.tensor([[1.0, 0.0]] * 6)
    greedy = choose_actions(probs, arn, s, "greedy-greedy")
    # With a one-hot latent policy both modes pick the ARN's argmax for that latent.
    assert torch.equal(greedy, arn(s, torch.zeros(6, dtype=torch.long)).argmax(1))
    assert torch.equal(choose_actions(probs, arn, s, "marginal"), greedy)


def test_arn_learns_the_latent_to_action_permutation(
    trained_lpn: tuple[VectorLPN, dict[int, int]], tmp_path: Path
) -> None:
    lpn, mapping = trained_lpn
    settings = OnlineSettings(steps=300, heldout_episodes=3)
    logged: list[tuple[int, dict[str, float]]] = []
    result = run_online(lpn, ShiftEnv, settings, seed=0, log=lambda t, m: logged.append((t, m)))
    assert [t for t, _ in result.curve] == list(range(0, 300, 50))
    assert result.updates == 300 - 31
    states = torch.rand(512, 3) * 4 - 1
    for a, z in mapping.items():
        pred = result.arn(states, torch.full((512,), z)).argmax(1)
        assert (pred == a).float().mean() > 0.95
    assert [t for t, _, _ in result.heldout] == list(range(0, 300, 50))
    assert result.final_heldout is not None
    assert logged[0][0] == 0
    assert "eval/return" in logged[0][1]


def test_curve_csv_format(tmp_path: Path) -> None:
    path = write_curve_csv(tmp_path / "0.csv", [(0, 9.0), (50, 500.0), (100, -97.5)])
    assert path.read_text() == "0,9.0\n50,500.0\n100,-97.5\n"
    assert read_curve_csv(path) == [(0, 9.0), (50, 500.0), (100, -97.5)]


def test_faithful_cartpole_grid_has_twenty_points(tmp_path: Path) -> None:
    import gymnasium as gym

    torch.manual_seed(0)
    lpn = VectorLPN(4, 2, ngf=8)
    settings = OnlineSettings(heldout_episodes=0)
    result = run_online(lpn, lambda: gym.make("CartPole-v1"), settings, seed=3)
    path = write_curve_csv(tmp_path / "3.csv", result.curve)
    lines = path.read_text().splitlines()
    assert len(lines) == 20
    assert [int(line.split(",")[0]) for line in lines] == list(range(0, 1000, 50))
    assert result.final_heldout is None
