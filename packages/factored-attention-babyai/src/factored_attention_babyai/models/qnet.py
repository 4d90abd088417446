"""Q-value network over the value map (spec §5.3, ``BigConvolutionValueMapExtractor``).

:meth:`QNetwork.forward` is the plain network. :meth:`QNetwork.forward_factored` computes the
same function when the cell features φ are attribute-table lookups (φ(h, w) = [A[type],
A[11 + colour]], true of every interaction model here) — which makes the first 3×3
convolution, 82 % of the network's multiply-adds, a sum of 10 precomputed rows per cell: for
each of the 9 kernel offsets, the row of the neighbour's (type, colour) pair (66 pairs), that
offset's weight slice applied to the pair's embedding (zero padding = no row), and one row
for the agent's direction at the cell's position (the direction channels are the same in
every cell, so their contribution depends only on the direction and on which neighbours lie
inside the grid). The value and reward channels keep a 2-channel convolution, computed as a
matrix product of 3×3 patches. The network then runs on cell rows [B·H·W, channels] (1×1
convolutions as matrix products, the last one after the mean over cells), which on a CPU
avoids the convolution layout conversions. Gradients reach the convolution weights (through
the row tables) and the direction embedding as before.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

N_ACTIONS = 7
N_TYPES, N_COLORS = 11, 6
N_PAIRS = N_TYPES * N_COLORS


class QNetwork(nn.Module):
    """[direction emb (48), φ (96), V, r] per cell → 3×3 conv → 1×1 → 1×1 → mean over cells → Q."""

    def __init__(self, feature_dim: int = 96, direction_dim: int = 48, width: int = 584) -> None:
        super().__init__()
        self.direction_embeddings = nn.Embedding(4, direction_dim)
        channels = direction_dim + feature_dim + 2
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width // 2, 1),
            nn.ReLU(),
            nn.Conv2d(width // 2, N_ACTIONS, 1),
        )

    def forward(self, direction: Tensor, features: Tensor, value: Tensor, reward: Tensor) -> Tensor:
        """Q-values.

        Args:
            direction: [B] agent directions.
            features: [B, H, W, F] cell features φ.
            value: [B, H, W] value map V.
            reward: [B, H, W] reward map r.

        Returns:
            [B, 7] Q-values.
        """
        b, h, w = value.shape
        dirs = self.direction_embeddings(direction.long())[:, None, None, :].expand(b, h, w, -1)
        x = torch.cat([dirs, features, value.unsqueeze(-1), reward.unsqueeze(-1)], -1)
        return self.net(x.permute(0, 3, 1, 2)).mean((2, 3))

    def lookup_rows(self, attrib_table: Tensor, h: int, w: int) -> Tensor:
        """The first convolution's rows (:func:`lookup_conv_rows`), [9·66 + 4·H·W + 1, width]."""
        conv = self.net[0]
        assert isinstance(conv, nn.Conv2d)
        assert conv.bias is not None
        d = self.direction_embeddings.embedding_dim
        e = attrib_table.shape[1]
        weight = conv.weight  # [width, d + 2E + 2, 3, 3]
        return lookup_conv_rows(
            weight[:, d : d + 2 * e],
            weight[:, :d],
            attribute_pairs(attrib_table),
            self.direction_embeddings.weight,
            conv.bias,
            h,
            w,
        )

    def forward_factored(
        self,
        direction: Tensor,
        image: Tensor,
        attrib_table: Tensor,
        value: Tensor,
        reward: Tensor,
        rows: Tensor | None = None,
    ) -> Tensor:
        """Q-values, equal to :meth:`forward` with φ = [A[type], A[11 + colour]].

        The network runs on cell rows ``[B·H·W, channels]``: the first convolution is a sum
        of 10 rows of :meth:`lookup_rows` per cell (9 neighbour pairs, 1 direction-and-
        position row) plus a 2-channel 3×3 convolution of the value and reward maps; the 1×1
        convolutions are matrix products; the last one is applied after the mean over cells
        (it is linear, so the result is the same).

        Args:
            direction: [B] agent directions.
            image: [B, H, W, ≥2] integer attributes (type < 11, colour < 6).
            attrib_table: [17, E] the interaction model's attribute table A.
            value: [B, H, W] value map V.
            reward: [B, H, W] reward map r.
            rows: :meth:`lookup_rows` of ``attrib_table``, when the caller already has them
                (several chunks of frames with the same weights); computed here when None.

        Returns:
            [B, 7] Q-values.
        """
        conv0, conv1, conv2 = self.net[0], self.net[2], self.net[4]
        assert isinstance(conv0, nn.Conv2d)
        assert isinstance(conv1, nn.Conv2d)
        assert isinstance(conv2, nn.Conv2d)
        b, h, w = value.shape
        if rows is None:
            rows = self.lookup_rows(attrib_table, h, w)
        first = lookup_conv(rows, image, direction)
        maps = torch.stack([value, reward], 1)  # [B, 2, H, W]
        patches = F.unfold(maps, 3, padding=1).transpose(1, 2).reshape(b * h * w, 18)
        width = conv0.weight.shape[0]
        first = torch.addmm(first, patches, conv0.weight[:, -2:].reshape(width, 18).t())
        hidden = F.relu(F.linear(F.relu(first), conv1.weight.flatten(1), conv1.bias))
        pooled = hidden.view(b, h * w, -1).mean(1)
        return F.linear(pooled, conv2.weight.flatten(1), conv2.bias)


class _RowSum(torch.autograd.Function):
    """``out[n] = Σ_j rows[index[n, j]]``.

    ``embedding_bag`` forward; the backward adds the output gradient into the rows column by
    column with ``index_add_`` (on a CPU several times faster than ``embedding_bag``'s
    sort-based backward for these few, much-repeated rows).
    """

    @staticmethod
    def forward(ctx: Any, rows: Tensor, index: Tensor) -> Tensor:
        """``rows [R, C]``, ``index [N, J]`` → ``[N, C]``."""
        ctx.save_for_backward(index)
        ctx.n_rows = rows.shape[0]
        ctx.rows_dtype = rows.dtype
        return F.embedding_bag(index, rows, mode="sum")

    @staticmethod
    def backward(ctx: Any, *grad_outputs: Tensor) -> tuple[Tensor, None]:
        """Gradient of the rows (none for the index)."""
        (index,) = ctx.saved_tensors
        grad = grad_outputs[0].contiguous()
        if grad.dtype in (torch.float16, torch.bfloat16):  # sums of thousands of rows
            grad = grad.float()
        out = grad.new_zeros(ctx.n_rows, grad.shape[1])
        for j in range(index.shape[1]):
            out.index_add_(0, index[:, j], grad)
        return out.to(ctx.rows_dtype), None


def attribute_pairs(table: Tensor) -> Tensor:
    """``[A[type], A[11 + colour]]`` for the 66 (type, colour) pairs, type-major → [66, 2E]."""
    types = torch.arange(N_TYPES, device=table.device).repeat_interleave(N_COLORS)
    colours = torch.arange(N_COLORS, device=table.device).repeat(N_TYPES) + N_TYPES
    return torch.cat([table[types], table[colours]], -1)


def lookup_conv_rows(
    pair_weight: Tensor,
    direction_weight: Tensor,
    pairs: Tensor,
    directions: Tensor,
    bias: Tensor,
    h: int,
    w: int,
) -> Tensor:
    """Rows of a zero-padded 3×3 convolution whose input per cell is [direction, pair] lookups.

    Row ``66·s + pair``: kernel offset s applied to the (type, colour) pair's embedding.
    Row ``9·66 + H·W·d + p``: the direction-d embedding summed over the offsets whose
    neighbour of grid position p lies inside the grid (the direction is the same in every
    cell), plus the bias. Last row: zeros (a neighbour outside the grid).

    Args:
        pair_weight: [O, 2E, 3, 3] the weight slice of the pair channels.
        direction_weight: [O, D, 3, 3] the weight slice of the direction channels.
        pairs: [66, 2E] pair embeddings (:func:`attribute_pairs`).
        directions: [4, D] direction embeddings.
        bias: [O].
        h: grid height.
        w: grid width.

    Returns:
        [9·66 + 4·H·W + 1, O].
    """
    width = pair_weight.shape[0]
    pair_rows = torch.einsum("pc,ocij->ijpo", pairs, pair_weight)
    dir_rows = torch.einsum("kc,ocij->ijko", directions, direction_weight)
    inside = F.unfold(pair_weight.new_ones(1, 1, h, w), 3, padding=1)[0]  # [9, H·W]
    dir_pos = torch.einsum("sp,sko->kpo", inside, dir_rows.reshape(9, 4, width))
    return torch.cat(
        [
            pair_rows.reshape(9 * N_PAIRS, width),
            dir_pos.reshape(4 * h * w, width) + bias,
            pair_weight.new_zeros(1, width),
        ]
    )


def lookup_conv(rows: Tensor, image: Tensor, direction: Tensor) -> Tensor:
    """The convolution of :func:`lookup_conv_rows` on every cell: 10 rows summed per cell.

    Args:
        rows: [9·66 + 4·H·W + 1, O] from :func:`lookup_conv_rows`.
        image: [B, H, W, ≥2] integer attributes (type < 11, colour < 6).
        direction: [B] agent directions.

    Returns:
        [B·H·W, O] cell rows.
    """
    b, h, w = image.shape[:3]
    pad = rows.shape[0] - 1
    codes = image[..., 0].long() * N_COLORS + image[..., 1].long()
    codes = F.pad(codes, (1, 1, 1, 1), value=-1)  # [B, H+2, W+2]
    columns = []
    for i in range(3):
        for j in range(3):
            shifted = codes[:, i : i + h, j : j + w]
            columns.append(torch.where(shifted >= 0, (i * 3 + j) * N_PAIRS + shifted, pad))
    position = torch.arange(h * w, device=image.device).reshape(h, w)
    columns.append(9 * N_PAIRS + direction.long()[:, None, None] * (h * w) + position)
    index = torch.stack(columns, -1).reshape(b * h * w, 10)
    return _RowSum.apply(rows, index)
