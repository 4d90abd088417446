"""Q-value network over the value map (spec §5.3, ``BigConvolutionValueMapExtractor``).

:meth:`QNetwork.forward` is the plain network. :meth:`QNetwork.forward_factored` computes the
same function when the cell features φ are attribute-table lookups (φ(h, w) = [A[type],
A[11 + colour]], true of every interaction model here) — which makes the first 3×3
convolution, 82 % of the network's multiply-adds, a sum of 18 precomputed rows per cell: for
each of the 9 kernel offsets, the row of the neighbour's (type, colour) pair (66 pairs) and
the row of the agent's direction (the direction channels are constant over the grid), each
row being that offset's weight slice applied to the embedding. Zero padding = no row. The
value and reward channels keep a 2-channel convolution. Gradients reach the convolution
weights (through the row tables) and the direction embedding as before.
"""

from __future__ import annotations

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

    def _pair_rows(self, attrib_table: Tensor) -> Tensor:
        """Rows of the first convolution per (offset, pair/direction) → [9·(66+4) + 1, width]."""
        conv = self.net[0]
        assert isinstance(conv, nn.Conv2d)
        d = self.direction_embeddings.embedding_dim
        e = attrib_table.shape[1]
        types = torch.arange(N_TYPES, device=attrib_table.device).repeat_interleave(N_COLORS)
        colours = torch.arange(N_COLORS, device=attrib_table.device).repeat(N_TYPES) + N_TYPES
        pairs = torch.cat([attrib_table[types], attrib_table[colours]], -1)  # [66, 2E]
        weight = conv.weight  # [width, d + 2E + 2, 3, 3]
        pair_rows = torch.einsum("pc,ocij->ijpo", pairs, weight[:, d : d + 2 * e])
        dir_rows = torch.einsum("kc,ocij->ijko", self.direction_embeddings.weight, weight[:, :d])
        rows = torch.cat([pair_rows, dir_rows], 2).reshape(-1, weight.shape[0])
        return torch.cat([rows, rows.new_zeros(1, rows.shape[1])])  # last row: padding

    def forward_factored(
        self,
        direction: Tensor,
        image: Tensor,
        attrib_table: Tensor,
        value: Tensor,
        reward: Tensor,
    ) -> Tensor:
        """Q-values, equal to :meth:`forward` with φ = [A[type], A[11 + colour]].

        Args:
            direction: [B] agent directions.
            image: [B, H, W, ≥2] integer attributes (type < 11, colour < 6).
            attrib_table: [17, E] the interaction model's attribute table A.
            value: [B, H, W] value map V.
            reward: [B, H, W] reward map r.

        Returns:
            [B, 7] Q-values.
        """
        conv = self.net[0]
        assert isinstance(conv, nn.Conv2d)
        b, h, w = value.shape
        rows = self._pair_rows(attrib_table)
        per_offset = N_PAIRS + 4
        pad = rows.shape[0] - 1
        codes = image[..., 0].long() * N_COLORS + image[..., 1].long()
        codes = F.pad(codes, (1, 1, 1, 1), value=-1)  # [B, H+2, W+2]
        dirs = direction.long()[:, None, None].expand(b, h, w)
        index = []
        for i in range(3):
            for j in range(3):
                base = (i * 3 + j) * per_offset
                shifted = codes[:, i : i + h, j : j + w]
                valid = shifted >= 0
                index.append(torch.where(valid, base + shifted, pad))
                index.append(torch.where(valid, base + N_PAIRS + dirs, pad))
        index = torch.stack(index, -1).reshape(b * h * w, 18)
        first = F.embedding_bag(index, rows, mode="sum").reshape(b, h, w, -1).permute(0, 3, 1, 2)
        maps = torch.stack([value, reward], 1)  # [B, 2, H, W]
        first = first + F.conv2d(maps, conv.weight[:, -2:], conv.bias, padding=1)
        return self.net[1:](first).mean((2, 3))
