"""Interaction (goal-identification) models: score every cell by how well it matches a mission.

All models share one input convention: ``image`` [B, H, W, C] integer attributes whose first two
channels are (object-type id, colour id) — further channels (the state) are ignored — and
``mission`` [B, L] word ids. Each returns an :class:`InteractionOutput` holding the cell logit
map ŷ [B, H, W] (σ(ŷ) is the goal probability), the per-factor cell embeddings
e [B, 2, H, W, E] (consumed by the discriminator's image loss and the planner) and, for the
attention models, the attention tensor.

Models (spec §3):

* ``independent`` — sparse factored attention (paper Eq. 1): per-factor
  a_{c,h,w,l} = ReLU(cos(e_c(h,w), u_l)); s(h,w) = Π_c (Σ_l a_{c,h,w,l} + 1e−4);
  ŷ = s·exp(α) + β; with the L1 penalty R = mean_{i,j} |cos(A_i, U_j)| (weight :func:`l1_weight`).
* ``independent_noreg`` — the same without the penalty.
* ``simple`` / ``simple_noreg`` — non-factored: concatenated factors → Linear(96→48) →
  Σ_l ReLU(cos(·, u_l)) → same affine; penalty over the 66 projected (type, colour) pairs.
* ``transformer`` — encoder (words) / decoder (cells) ``nn.Transformer``, Linear(96→1) per cell.
* ``film`` — bidirectional GRU instruction code FiLM-modulating 1×1 convolutions over cells.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

#: Attribute offsets into the shared attribute table: rows 0–10 object types, 11–16 colours.
ATTRIB_OFFSETS = (0, 11, 17)
N_TYPES = 11
N_COLORS = 6
N_ATTRIBS = ATTRIB_OFFSETS[-1]
EMBED_DIM = 48
N_FACTORS = 2
#: Added to each factor's attention sum before the product of Eq. 1 (keeps log finite).
SCORE_EPS = 1e-4

#: Interaction model names (the ``--model`` choices of ``train-discriminator``).
MODEL_NAMES = (
    "independent",
    "independent_noreg",
    "simple",
    "simple_noreg",
    "transformer",
    "film",
)
#: Models trained with the λ_t·R sparsity penalty.
REGULARIZED = frozenset({"independent", "simple"})


class InteractionOutput(NamedTuple):
    """What every interaction model returns.

    Attributes:
        logits: [B, H, W] cell logits ŷ.
        factors: [B, 2, H, W, E] per-factor cell embeddings (type, colour).
        attention: [B, 2, H·W, L] per-factor attention (``independent``), [B, 1, H·W, L]
            (``simple``) or ``None`` (transformer, film).
    """

    logits: Tensor
    factors: Tensor
    attention: Tensor | None


def l1_weight(step: int, start: int = 1000, end: int = 6000, final: float = 1.0) -> float:
    """λ_t of the sparsity penalty: 0 until ``start``, linear to ``final`` at ``end``, then flat.

    Args:
        step: the global training step (0-based).
        start: last step with λ = 0.
        end: first step with λ = ``final``.
        final: the weight after the warm-up.
    """
    if step <= start:
        return 0.0
    if step >= end:
        return final
    return final * (step - start) / (end - start)


def _orthogonal_rows(rows: int, dim: int, generator: torch.Generator | None = None) -> Tensor:
    """The first ``rows`` rows of a Haar-random ``dim``×``dim`` orthogonal matrix.

    (With ``rows`` > ``dim`` — only in tiny test models — a larger matrix's first ``dim`` columns.)
    """
    n = max(rows, dim)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator))
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)  # sign fix ⇒ Haar distribution
    return q[:rows, :dim].clone()


def cosine_matrix(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarities of every row of ``a`` [N, E] with every row of ``b`` [M, E] → [N, M]."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(-1, -2)


def factor_embeddings(table: Tensor, image: Tensor) -> Tensor:
    """Look up the per-factor embeddings of each cell.

    Args:
        table: [17, E] shared attribute table (types then colours).
        image: [B, H, W, ≥2] integer attributes (type, colour, ...).

    Returns:
        [B, 2, H, W, E]: e_c(h, w) = table[image[..., c] + offset_c].
    """
    offsets = torch.tensor(ATTRIB_OFFSETS[:N_FACTORS], device=image.device)
    idx = image[..., :N_FACTORS].long() + offsets  # [B, H, W, 2]
    return table[idx].permute(0, 3, 1, 2, 4)


class _AttentionBase(nn.Module):
    """Orthogonally initialised attribute/word tables and the output affine (α, β)."""

    def __init__(self, n_words: int, embed_dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.n_words = n_words
        self.attrib_embeddings = nn.Parameter(_orthogonal_rows(N_ATTRIBS, embed_dim))
        self.word_embeddings = nn.Parameter(_orthogonal_rows(n_words, embed_dim))
        self.alpha = nn.Parameter(torch.zeros(()))
        self.beta = nn.Parameter(torch.zeros(()))

    def attribute_cosines(self) -> Tensor:
        """cos(U_j, A_i) for every word j and attribute i → [n_words, 17]."""
        return cosine_matrix(self.word_embeddings, self.attrib_embeddings)

    def penalty(self) -> Tensor:
        """R = mean over all (word, attribute) pairs of |cos(U_j, A_i)| (a scalar)."""
        return self.attribute_cosines().abs().mean()

    def word_attribute_correlations(self) -> Tensor:
        """Figure 4b matrix σ(clip(exp(α)·2·clip(cos, 0, 1) + β, −8, 8)) [n_words, n_attribs]."""
        cos = self.attribute_cosines().clamp(0, 1)
        return torch.sigmoid((self.alpha.exp() * 2 * cos + self.beta).clamp(-8, 8))


class FactoredAttention(_AttentionBase):
    """Sparse factored attention (``independent``; paper Eq. 1)."""

    def forward(self, image: Tensor, mission: Tensor) -> InteractionOutput:
        """Score cells.

        Args:
            image: [B, H, W, ≥2] integer attributes.
            mission: [B, L] word ids.
        """
        b, h, w = image.shape[:3]
        factors = factor_embeddings(self.attrib_embeddings, image)  # [B, 2, H, W, E]
        words = F.normalize(self.word_embeddings[mission], dim=-1)  # [B, L, E]
        cells = F.normalize(factors.reshape(b, N_FACTORS, h * w, -1), dim=-1)
        attention = torch.relu(torch.einsum("bcne,ble->bcnl", cells, words))
        log_score = torch.log(attention.sum(-1) + SCORE_EPS).sum(1)  # [B, H·W]
        logits = log_score.exp() * self.alpha.exp() + self.beta
        return InteractionOutput(logits.reshape(b, h, w), factors, attention)


class SimpleAttention(_AttentionBase):
    """Non-factored sparse attention (``simple``): a projection of the concatenated factors."""

    def __init__(self, n_words: int, embed_dim: int = EMBED_DIM) -> None:
        super().__init__(n_words, embed_dim)
        self.projection = nn.Linear(N_FACTORS * embed_dim, embed_dim)
        types = torch.arange(N_TYPES).repeat_interleave(N_COLORS)
        colors = torch.arange(N_COLORS).repeat(N_TYPES)
        rows = torch.stack([types, colors + ATTRIB_OFFSETS[1]], -1)  # [66, 2] table rows
        self.register_buffer("pair_rows", rows, persistent=False)

    def _project(self, factors: Tensor) -> Tensor:
        """[..., 2, E] factor embeddings → [..., E] projected cell embedding."""
        return self.projection(factors.flatten(-2))

    def attribute_cosines(self) -> Tensor:
        """cos(U_j, P(type, colour)) for the 66 (type, colour) pairs → [n_words, 66]."""
        pair_rows: Tensor = self.pair_rows  # pyright: ignore[reportAssignmentType]
        pairs = self.attrib_embeddings[pair_rows]  # [66, 2, E]
        return cosine_matrix(self.word_embeddings, self._project(pairs))

    def forward(self, image: Tensor, mission: Tensor) -> InteractionOutput:
        """Score cells (same arguments as :meth:`FactoredAttention.forward`)."""
        b, h, w = image.shape[:3]
        factors = factor_embeddings(self.attrib_embeddings, image)
        cells = self._project(factors.permute(0, 2, 3, 1, 4)).reshape(b, h * w, -1)
        words = F.normalize(self.word_embeddings[mission], dim=-1)
        attention = torch.relu(torch.einsum("bne,ble->bnl", F.normalize(cells, dim=-1), words))
        logits = attention.sum(-1) * self.alpha.exp() + self.beta
        return InteractionOutput(logits.reshape(b, h, w), factors, attention.unsqueeze(1))


class TransformerInteraction(nn.Module):
    """Encoder–decoder Transformer discriminator (words encoded, cells decoded), no positions."""

    def __init__(self, n_words: int, embed_dim: int = EMBED_DIM) -> None:
        super().__init__()
        d_model = N_FACTORS * embed_dim
        self.attrib_embeddings = nn.Parameter(_orthogonal_rows(N_ATTRIBS, embed_dim))
        self.word_embeddings = nn.Parameter(_orthogonal_rows(n_words, embed_dim))
        self.in_projection = nn.Linear(embed_dim, d_model)
        self.transformer = nn.Transformer(
            d_model=d_model,
            nhead=4,
            num_encoder_layers=1,
            num_decoder_layers=4,
            dim_feedforward=2 * d_model,
            dropout=0.0,
            batch_first=True,
        )
        self.out = nn.Linear(d_model, 1)

    def forward(self, image: Tensor, mission: Tensor) -> InteractionOutput:
        """Score cells (same arguments as :meth:`FactoredAttention.forward`)."""
        b, h, w = image.shape[:3]
        factors = factor_embeddings(self.attrib_embeddings, image)
        cells = factors.permute(0, 2, 3, 1, 4).reshape(b, h * w, -1)  # [B, H·W, 96]
        words = self.in_projection(self.word_embeddings[mission])  # [B, L, 96]
        decoded = self.transformer(words, cells)
        return InteractionOutput(self.out(decoded).reshape(b, h, w), factors, None)


def normalized_gaussian_rows_(linear: nn.Linear) -> None:
    """FiLM init: N(0, 1) weights with each output row rescaled to unit L2 norm, zero bias."""
    with torch.no_grad():
        linear.weight.normal_(0.0, 1.0)
        linear.weight.div_(linear.weight.norm(dim=1, keepdim=True))
        if linear.bias is not None:
            linear.bias.zero_()


class FilmInteraction(nn.Module):
    """FiLM discriminator: GRU instruction code modulating per-cell 1×1 convolutions."""

    def __init__(self, n_words: int, embed_dim: int = EMBED_DIM, hidden: int = 128) -> None:
        super().__init__()
        self.attrib_embeddings = nn.Embedding(N_ATTRIBS, embed_dim)
        self.word_embeddings = nn.Embedding(n_words, embed_dim)
        self.gru = nn.GRU(embed_dim, embed_dim, batch_first=True, bidirectional=True)
        code = 2 * embed_dim
        self.conv1 = nn.Conv2d(N_FACTORS * embed_dim, hidden, 1)
        self.conv2 = nn.Conv2d(hidden, hidden, 1)
        self.gamma = nn.Linear(code, hidden)
        self.beta = nn.Linear(code, hidden)
        self.out = nn.Linear(hidden, 1)
        for linear in (self.gamma, self.beta, self.out):
            normalized_gaussian_rows_(linear)

    def forward(self, image: Tensor, mission: Tensor) -> InteractionOutput:
        """Score cells (same arguments as :meth:`FactoredAttention.forward`)."""
        b, h, w = image.shape[:3]
        factors = factor_embeddings(self.attrib_embeddings.weight, image)
        _, final = self.gru(self.word_embeddings(mission))  # final: [2, B, E]
        code = final.transpose(0, 1).reshape(b, -1)  # [B, 2E]
        x = factors.permute(0, 1, 4, 2, 3).reshape(b, -1, h, w)  # [B, 96, H, W]
        x = self.conv2(torch.relu(self.conv1(x)))
        x = torch.relu(x * self.gamma(code)[..., None, None] + self.beta(code)[..., None, None])
        logits = self.out(x.permute(0, 2, 3, 1)).squeeze(-1)
        return InteractionOutput(logits, factors, None)


def build_interaction(name: str, n_words: int) -> nn.Module:
    """Build the interaction model ``name`` (one of :data:`MODEL_NAMES`) for ``n_words`` words."""
    if name in ("independent", "independent_noreg"):
        return FactoredAttention(n_words)
    if name in ("simple", "simple_noreg"):
        return SimpleAttention(n_words)
    if name == "transformer":
        return TransformerInteraction(n_words)
    if name == "film":
        return FilmInteraction(n_words)
    raise ValueError(f"unknown interaction model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def sparsity_penalty(model: nn.Module, name: str) -> Tensor | None:
    """R of a regularised model (``independent``, ``simple``), else ``None``."""
    if name in REGULARIZED:
        assert isinstance(model, FactoredAttention | SimpleAttention)
        return model.penalty()
    return None


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (for logs)."""
    return sum(math.prod(p.shape) for p in model.parameters() if p.requires_grad)
