"""Q-value network over the value map (spec §5.3, ``BigConvolutionValueMapExtractor``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

N_ACTIONS = 7


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
