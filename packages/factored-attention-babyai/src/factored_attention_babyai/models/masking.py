"""The masking module (spec §4.1) and the discriminator losses that use it (§4.2).

The masking module predicts a spatial attention π (a softmax over the H·W cells) saying which
cell of a state matters. Nothing supervises π directly: it is trained by the image loss L_img,
which asks the π-pooled factor embeddings of two end-of-demonstration states to match exactly
when both satisfy the same instruction. In the demonstrations the final frame has the agent
facing the goal, so the cell π learns to pick is the one in front of the agent
(:func:`faced_cell`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from factored_attention_babyai.models.interaction import (
    ATTRIB_OFFSETS,
    EMBED_DIM,
    N_ATTRIBS,
    N_FACTORS,
)
from factored_attention_babyai.models.qnet import attribute_pairs, lookup_conv, lookup_conv_rows

#: Object-type id of the agent cell (minigrid OBJECT_TO_IDX["agent"]).
AGENT_TYPE = 10
#: (drow, dcol) of one step forward for directions 0 east, 1 south, 2 west, 3 north.
DIRECTION_DELTAS = ((0, 1), (1, 0), (0, -1), (-1, 0))
#: Floor added to π inside the log-sum-exp of L_int, and π's clamp in the entropy.
MASK_EPS = 1e-6


def faced_cell(image: Tensor, direction: Tensor) -> Tensor:
    """The (row, col) of the cell in front of the agent.

    Args:
        image: [B, H, W, ≥1] integer attributes; the agent is the unique cell of type 10.
        direction: [B] agent directions (0 east, 1 south, 2 west, 3 north).

    Returns:
        [B, 2] long (row, col), clamped to the grid.
    """
    b, h, w = image.shape[:3]
    flat = (image[..., 0] == AGENT_TYPE).reshape(b, -1).float().argmax(-1)
    deltas = torch.tensor(DIRECTION_DELTAS, device=image.device)[direction.long()]
    rows = (flat // w + deltas[:, 0]).clamp(0, h - 1)
    cols = (flat % w + deltas[:, 1]).clamp(0, w - 1)
    return torch.stack([rows, cols], -1)


class _ResidualBlock(nn.Module):
    """ReLU([1×1 conv, BN, ReLU, 1×1 conv, BN](x) + [1×1 conv, BN](x))."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        """[B, c_in, H, W] → [B, c_out, H, W]."""
        return torch.relu(self.body(x) + self.skip(x))

    def forward_rows(self, x: Tensor) -> Tensor:
        """The same on cell rows: [N, c_in] → [N, c_out] (N = B·H·W)."""
        conv1, bn1, _, conv2, bn2 = self.body
        conv_s, bn_s = self.skip
        hidden = F.relu(_batch_norm(x @ _matrix(conv1), bn1))
        body = _batch_norm(hidden @ _matrix(conv2), bn2)
        return torch.relu(body + _batch_norm(x @ _matrix(conv_s), bn_s))


def _matrix(conv: nn.Module) -> Tensor:
    """A 1×1 convolution's weight as a [c_in, c_out] matrix (for cell rows)."""
    assert isinstance(conv, nn.Conv2d)
    return conv.weight.flatten(1).t()


def _batch_norm(x: Tensor, bn: nn.Module) -> Tensor:
    """``bn`` (a ``BatchNorm2d``) applied to cell rows [N, C]: statistics over the N rows.

    In training mode the batch statistics are used and the running ones updated, as by the
    module itself.
    """
    assert isinstance(bn, nn.BatchNorm2d)
    assert bn.momentum is not None
    if bn.training and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    n, c = x.shape
    rows = x.contiguous().view(n, 1, 1, c).permute(0, 3, 1, 2)  # [N, C, 1, 1] channels-last
    out = F.batch_norm(
        rows, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.training, bn.momentum, bn.eps
    )
    return out.permute(0, 2, 3, 1).reshape(n, c)


class MaskModule(nn.Module):
    """``ImageComponentsToMask``: which cell of a state matters, as a softmax over cells."""

    def __init__(self, embed_dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.attrib_embeddings = nn.Embedding(N_ATTRIBS, embed_dim)
        self.direction_embeddings = nn.Embedding(4, 2 * embed_dim)  # only the first E dims used
        width = 3 * embed_dim
        self.stem = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.blocks = nn.Sequential(
            _ResidualBlock(width, 2 * width), _ResidualBlock(2 * width, width)
        )
        self.score = nn.Linear(width, 1)
        self.tau = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, image: Tensor, direction: Tensor) -> Tensor:
        """Spatial attention of a state (the same function as :meth:`forward_plain`).

        The per-cell input is table lookups (direction, type and colour embeddings), so the
        3×3 stem convolution — 40 % of the module's multiply-adds — is a sum of 10
        precomputed rows per cell (:meth:`_stem_rows`: for each of the 9 kernel offsets the
        neighbour's (type, colour) row, plus one direction-and-position row holding the bias);
        the rest runs on cell rows ``[B·H·W, channels]`` (1×1 convolutions as matrix
        products, batch norm over the same B·H·W values as ``BatchNorm2d``; in training mode
        the running statistics are updated as by the modules).

        Args:
            image: [B, H, W, ≥2] integer attributes (type < 11, colour < 6, ...).
            direction: [B] agent directions.

        Returns:
            π: [B, H, W], non-negative, summing to 1 over the cells of each state.
        """
        b, h, w = image.shape[:3]
        x = F.relu(lookup_conv(self._stem_rows(h, w), image, direction))  # [B·H·W, 3E]
        for block in self.blocks:
            assert isinstance(block, _ResidualBlock)
            x = block.forward_rows(x)
        score = F.linear(x, self.score.weight, self.score.bias).reshape(b, h * w)
        pi = torch.softmax(self.tau.exp() * torch.relu(score) + self.bias, -1)
        return pi.reshape(b, h, w)

    def _stem_rows(self, h: int, w: int) -> Tensor:
        """The stem convolution's rows (:func:`lookup_conv_rows`), [9·66 + 4·H·W + 1, 3E]."""
        conv = self.stem[0]
        assert isinstance(conv, nn.Conv2d)
        assert conv.bias is not None
        e = self.embed_dim
        weight = conv.weight  # [3E, 3E, 3, 3]: input channels (direction, type, colour)
        return lookup_conv_rows(
            weight[:, e:],
            weight[:, :e],
            attribute_pairs(self.attrib_embeddings.weight),
            self.direction_embeddings.weight[:, :e],
            conv.bias,
            h,
            w,
        )

    def forward_plain(self, image: Tensor, direction: Tensor) -> Tensor:
        """The module as written: embeddings per cell, convolutions (the reference)."""
        b, h, w = image.shape[:3]
        offsets = torch.tensor(ATTRIB_OFFSETS[:N_FACTORS], device=image.device)
        attribs = self.attrib_embeddings(image[..., :N_FACTORS].long() + offsets)  # [B,H,W,2,E]
        dirs = self.direction_embeddings(direction.long())[:, : self.embed_dim]  # [B, E]
        x = torch.cat([dirs[:, None, None, :].expand(b, h, w, -1), attribs.flatten(-2)], -1)
        x = self.blocks(self.stem(x.permute(0, 3, 1, 2)))
        score = self.score(x.permute(0, 2, 3, 1)).reshape(b, h * w)
        pi = torch.softmax(self.tau.exp() * torch.relu(score) + self.bias, -1)
        return pi.reshape(b, h, w)


def interaction_loss(logits: Tensor, mask: Tensor, label: Tensor) -> Tensor:
    """L_int: BCE-with-logits of the mask-weighted log-sum-exp of the target state's logits.

    z = log Σ_{h,w} (π(h,w) + 1e−6)·exp(ŷ(h,w)); the caller detaches π so that only the
    interaction model learns from this loss.

    Args:
        logits: [B, H, W] interaction logits ŷ of the target state.
        mask: [B, H, W] π of the target state.
        label: [B] 1 for a positive pair, 0 for a negative.
    """
    z = torch.logsumexp(logits.flatten(1) + torch.log(mask.flatten(1) + MASK_EPS), -1)
    return F.binary_cross_entropy_with_logits(z, label.float())


def pooled_factors(mask: Tensor, factors: Tensor) -> Tensor:
    """π-weighted sums of the factor embeddings: [B, H, W] × [B, C, H, W, E] → [B, C, E]."""
    return torch.einsum("bhw,bchwe->bce", mask, factors)


def image_match(mask_s: Tensor, mask_t: Tensor, factors_s: Tensor, factors_t: Tensor) -> Tensor:
    """clamp(Π_c ReLU(cos(p^s_c, p^t_c)), 0, 1) of the pooled factors of two states → [B]."""
    cos = F.cosine_similarity(
        pooled_factors(mask_s, factors_s), pooled_factors(mask_t, factors_t), -1
    )
    return torch.relu(cos).prod(-1).clamp(0, 1)


def image_loss(
    mask_s: Tensor, mask_t: Tensor, factors_s: Tensor, factors_t: Tensor, label: Tensor
) -> Tensor:
    """L_img = MSE(match, y); the caller detaches the factors so only the mask learns from it.

    Args:
        mask_s: [B, H, W] π of the source state.
        mask_t: [B, H, W] π of the target state.
        factors_s: [B, C, H, W, E] factor embeddings of the source state.
        factors_t: [B, C, H, W, E] factor embeddings of the target state.
        label: [B] pair labels.
    """
    return F.mse_loss(image_match(mask_s, mask_t, factors_s, factors_t), label.float())


def mask_entropy(mask: Tensor) -> Tensor:
    """Mean over the batch of Σ_cells −π log π (π clamped to [1e−6, 1]); logged as ``me``."""
    pi = mask.flatten(1).clamp(MASK_EPS, 1.0)
    return -(pi * pi.log()).sum(-1).mean()
