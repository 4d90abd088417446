from __future__ import annotations

import torch

from ilpo.lpn import ImageLPN, VectorLPN, count_parameters, lpn_losses, make_optimizer, train_step
from ilpo.synthetic import SHIFTS, synthetic_transitions


def test_vector_shapes_and_probabilities() -> None:
    model = VectorLPN(state_dim=4, n_latent=3, ngf=16)
    logits, deltas = model(torch.randn(5, 4))
    assert logits.shape == (5, 3)
    assert deltas.shape == (5, 3, 4)
    probs = torch.softmax(logits, 1)
    torch.testing.assert_close(probs.sum(1), torch.ones(5))


def test_vector_parameter_count_matches_the_original() -> None:
    # Spec: CartPole (d=4, |Z|=2) ≈ 199.7k, Acrobot (d=6, |Z|=3) ≈ 200.7k.
    assert count_parameters(VectorLPN(4, 2)) == 199_686
    assert abs(count_parameters(VectorLPN(6, 3)) - 200_700) < 100


def test_batched_branches_equal_one_latent_at_a_time() -> None:
    torch.manual_seed(0)
    model = VectorLPN(state_dim=4, n_latent=3, ngf=16)
    s = torch.randn(6, 4)
    _, deltas = model(s)
    h = torch.nn.functional.leaky_relu(model.encode(s), 0.2)
    for z in range(3):
        onehot = torch.nn.functional.one_hot(torch.full((6,), z), 3).float()
        u = torch.nn.functional.leaky_relu(model.embed(onehot), 0.2)
        j = model.joint(torch.cat([h, u], 1))
        ref = model.dec2(
            torch.nn.functional.leaky_relu(model.dec1(torch.nn.functional.leaky_relu(j, 0.2)), 0.2)
        )
        torch.testing.assert_close(deltas[:, z], ref)


def _grads(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]


def _check_stop_gradients(
    model: VectorLPN | ImageLPN, s: torch.Tensor, s_next: torch.Tensor
) -> None:
    logits, deltas = model(s)
    out = lpn_losses(logits, deltas, s_next - s)
    for g in _grads(out.exp_loss, model.generator_parameters()):
        assert torch.equal(g, torch.zeros_like(g))
    for g in _grads(out.min_loss, model.policy_parameters()):
        assert torch.equal(g, torch.zeros_like(g))
    # ... and the other pairings do receive gradient.
    assert any(g.abs().sum() > 0 for g in _grads(out.min_loss, model.generator_parameters()))
    assert any(g.abs().sum() > 0 for g in _grads(out.exp_loss, model.policy_parameters()))


def test_vector_stop_gradients_are_exact() -> None:
    torch.manual_seed(1)
    _check_stop_gradients(VectorLPN(4, 2, ngf=16), torch.randn(8, 4), torch.randn(8, 4))


def test_image_shapes_and_stop_gradients() -> None:
    torch.manual_seed(2)
    model = ImageLPN(n_latent=3, ngf=4)
    s = torch.rand(2, 3, 128, 128) * 2 - 1
    logits, deltas = model(s)
    assert logits.shape == (2, 3)
    assert deltas.shape == (2, 3, 3, 128, 128)
    assert model.encode(s).shape == (2, 32)
    _check_stop_gradients(model, s, torch.rand(2, 3, 128, 128) * 2 - 1)


def test_image_parameter_count_matches_the_original() -> None:
    # Spec §2.2: ≈2.33M parameters with ngf=15.
    assert abs(count_parameters(ImageLPN(n_latent=4)) - 2.33e6) < 0.02e6


def test_min_latent_recovers_the_action_partition() -> None:
    torch.manual_seed(0)
    data = synthetic_transitions(n=2048, seed=0)
    model = VectorLPN(state_dim=data.states.shape[1], n_latent=len(SHIFTS), ngf=32)
    opt = make_optimizer(model, lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        idx = torch.randint(0, len(data.states), (64,), generator=gen)
        train_step(model, opt, data.states[idx], data.next_states[idx])
    with torch.no_grad():
        logits, deltas = model(data.states)
        best = lpn_losses(logits, deltas, data.next_states - data.states).best
    # Each action's transitions go to one latent, and distinct actions to distinct latents.
    mapping = {}
    for a in range(len(SHIFTS)):
        zs = best[data.actions == a]
        counts = torch.bincount(zs, minlength=len(SHIFTS))
        assert counts.max().item() / len(zs) > 0.98
        mapping[a] = int(counts.argmax())
    assert sorted(mapping.values()) == list(range(len(SHIFTS)))


def test_flat_adam_matches_torch_adam() -> None:
    torch.manual_seed(3)
    a = VectorLPN(4, 2, ngf=8)
    b = VectorLPN(4, 2, ngf=8)
    b.load_state_dict(a.state_dict())
    flat = make_optimizer(a, lr=1e-2)
    ref = torch.optim.Adam(b.parameters(), lr=1e-2, betas=(0.5, 0.999))
    s, s_next = torch.randn(16, 4), torch.randn(16, 4)
    for _ in range(5):
        train_step(a, flat, s, s_next)
        logits, deltas = b(s)
        ref.zero_grad()
        lpn_losses(logits, deltas, s_next - s).loss.backward()
        ref.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    # The state round-trips.
    state = flat.state_dict()
    other = make_optimizer(VectorLPN(4, 2, ngf=8))
    other.load_state_dict(state)
    assert other.steps == 5
    torch.testing.assert_close(other.exp_avg, flat.exp_avg)


def test_hand_written_backward_matches_autograd() -> None:
    torch.manual_seed(4)
    model = VectorLPN(4, 3, ngf=8)
    make_optimizer(model)  # attaches the flat .grad views
    s, s_next = torch.randn(16, 4), torch.randn(16, 4)
    out = model.loss_and_grads(s, s_next)
    manual = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    logits, deltas = model(s)
    ref = lpn_losses(logits, deltas, s_next - s)
    grads = torch.autograd.grad(ref.loss, list(model.parameters()))
    torch.testing.assert_close(out.loss, ref.loss)
    assert torch.equal(out.best, ref.best)
    for g, m in zip(grads, manual, strict=True):
        torch.testing.assert_close(m, g, rtol=1e-5, atol=1e-6)
