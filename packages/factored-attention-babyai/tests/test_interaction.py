"""Interaction models: Eq. 1 on a hand-built case, the L1 penalty and its gradient, shapes."""

from __future__ import annotations

import math

import pytest
import torch

from factored_attention_babyai.models.interaction import (
    MODEL_NAMES,
    N_ATTRIBS,
    FactoredAttention,
    SimpleAttention,
    build_interaction,
    l1_weight,
    sparsity_penalty,
)

KEY, BALL, RED = 5, 6, 0  # minigrid ids; colour rows start at 11


def _hand_built() -> FactoredAttention:
    """E = 4: key = e0, red = e1, ball = −e0, every other attribute e3; words e0, e1, (e0+e1)/√2."""
    model = FactoredAttention(n_words=3, embed_dim=4)
    eye = torch.eye(4)
    attribs = eye[3].repeat(N_ATTRIBS, 1)
    attribs[KEY] = eye[0]
    attribs[BALL] = -eye[0]
    attribs[11 + RED] = 2.5 * eye[1]  # cosine ignores the norm
    words = torch.stack([eye[0], eye[1], (eye[0] + eye[1]) / math.sqrt(2)])
    with torch.no_grad():
        model.attrib_embeddings.copy_(attribs)
        model.word_embeddings.copy_(words)
        model.alpha.fill_(math.log(2.0))
        model.beta.fill_(-1.0)
    return model


def test_eq1_on_hand_built_case() -> None:
    model = _hand_built()
    image = torch.zeros(1, 1, 3, 3, dtype=torch.long)
    image[0, 0, 0] = torch.tensor([KEY, RED, 0])  # matches both factors
    image[0, 0, 1] = torch.tensor([BALL, RED, 0])  # type factor attends to nothing
    image[0, 0, 2] = torch.tensor([1, 5, 0])  # empty grey cell: nothing at all
    mission = torch.tensor([[0, 1, 2]])
    out = model(image, mission)
    half = 1 / math.sqrt(2)
    s_key = (1 + 0 + half + 1e-4) * (0 + 1 + half + 1e-4)
    s_ball = (0 + 1e-4) * (0 + 1 + half + 1e-4)
    s_empty = 1e-4 * 1e-4
    expected = torch.tensor([[[2 * s_key - 1, 2 * s_ball - 1, 2 * s_empty - 1]]])
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-6)
    # The attention tensor holds the per-factor ReLU(cos): [B, 2, H·W, L].
    assert out.attention is not None
    torch.testing.assert_close(out.attention[0, 0, 0], torch.tensor([1.0, 0.0, half]))
    torch.testing.assert_close(out.attention[0, 0, 1], torch.zeros(3))  # −cos clipped
    torch.testing.assert_close(out.attention[0, 1, 1], torch.tensor([0.0, 1.0, half]))
    # Factors are table rows, kept per factor (not concatenated).
    assert out.factors.shape == (1, 2, 1, 3, 4)
    torch.testing.assert_close(out.factors[0, 1, 0, 0], 2.5 * torch.eye(4)[1])


def test_penalty_is_mean_abs_cosine_of_full_tables() -> None:
    model = _hand_built()
    cos = torch.zeros(3, N_ATTRIBS)
    half = 1 / math.sqrt(2)
    cos[0, KEY], cos[0, BALL] = 1.0, -1.0
    cos[1, 11 + RED] = 1.0
    cos[2, KEY], cos[2, BALL], cos[2, 11 + RED] = half, -half, half
    torch.testing.assert_close(model.penalty(), cos.abs().mean())


def _analytic_penalty_grad(a: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """d/dA and d/dU of mean_{j,i} |cos(U_j, A_i)| written out by hand."""
    an, un = a.norm(dim=1, keepdim=True), u.norm(dim=1, keepdim=True)
    cos = (u / un) @ (a / an).T  # [W, A]
    sign = torch.sign(cos) / cos.numel()
    # d cos_ji / d A_i = U_j/(|U_j||A_i|) − cos_ji A_i/|A_i|²
    grad_a = (sign.T @ (u / un)) / an - (sign * cos).sum(0)[:, None] * a / an**2
    grad_u = (sign @ (a / an)) / un - (sign * cos).sum(1)[:, None] * u / un**2
    return grad_a, grad_u


def test_penalty_gradient_matches_hand_derivation_and_finite_differences() -> None:
    torch.manual_seed(0)
    model = FactoredAttention(n_words=15).double()
    model.penalty().backward()
    a, u = model.attrib_embeddings.detach(), model.word_embeddings.detach()
    grad_a, grad_u = _analytic_penalty_grad(a, u)
    assert model.attrib_embeddings.grad is not None
    assert model.word_embeddings.grad is not None
    torch.testing.assert_close(model.attrib_embeddings.grad, grad_a)
    torch.testing.assert_close(model.word_embeddings.grad, grad_u)

    def penalty(attribs: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        an = torch.nn.functional.normalize(attribs, dim=-1)
        wn = torch.nn.functional.normalize(words, dim=-1)
        return (wn @ an.T).abs().mean()

    torch.testing.assert_close(penalty(a, u), model.penalty().detach())
    assert torch.autograd.gradcheck(
        penalty, (a[:5].clone().requires_grad_(), u[:4].clone().requires_grad_())
    )


def test_simple_penalty_over_projected_type_colour_pairs() -> None:
    torch.manual_seed(1)
    model = SimpleAttention(n_words=15)
    a = model.attrib_embeddings
    pairs = torch.stack(
        [torch.cat([a[t], a[11 + c]]) for t in range(11) for c in range(6)]
    )  # [66, 96]
    proj = torch.nn.functional.normalize(model.projection(pairs), dim=-1)
    words = torch.nn.functional.normalize(model.word_embeddings, dim=-1)
    torch.testing.assert_close(model.penalty(), (words @ proj.T).abs().mean())
    assert model.attribute_cosines().shape == (15, 66)


def test_l1_weight_schedule() -> None:
    assert l1_weight(0) == 0.0
    assert l1_weight(1000) == 0.0
    assert l1_weight(3500) == pytest.approx(0.5)
    assert l1_weight(6000) == 1.0
    assert l1_weight(10**6) == 1.0


def test_orthogonal_initialisation() -> None:
    model = FactoredAttention(n_words=15)
    gram = model.attrib_embeddings @ model.attrib_embeddings.T
    torch.testing.assert_close(gram, torch.eye(N_ATTRIBS), atol=1e-5, rtol=0)
    assert model.alpha.item() == 0.0
    assert model.beta.item() == 0.0


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_scores_cells_and_learns(name: str) -> None:
    torch.manual_seed(0)
    model = build_interaction(name, n_words=15)
    image = torch.randint(0, 6, (3, 8, 8, 3))
    image[..., 0] = torch.randint(0, 11, (3, 8, 8))
    mission = torch.randint(0, 15, (3, 5))
    out = model(image, mission)
    assert out.logits.shape == (3, 8, 8)
    assert out.factors.shape == (3, 2, 8, 8, 48)
    penalty = sparsity_penalty(model, name)
    assert (penalty is None) == (name not in ("independent", "simple"))
    loss = out.logits.sigmoid().mean() + (penalty if penalty is not None else 0.0)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads
    assert any(bool(g.abs().sum() > 0) for g in grads)
    # The state channel is ignored.
    image2 = image.clone()
    image2[..., 2] = 3
    torch.testing.assert_close(model(image2, mission).logits, out.logits)


def test_correlation_matrix_range() -> None:
    model = FactoredAttention(n_words=15)
    corr = model.word_attribute_correlations()
    assert corr.shape == (15, N_ATTRIBS)
    assert bool((corr >= 0.5).all())
    assert bool((corr < 1).all())
