"""MVProp value propagation over a goal map (spec §5.2, ``MVProp2D``).

From the interaction module's goal probabilities g and cell features φ:

* reward map r = MinMax(ReLU(g − b)) (min and max as constants, learnable b);
* propagation map p = σ(Linear(φ)) — learns which cells are traversable;
* discount γ = σ(θ);
* K iterations v^k = max(v^{k−1}, p · max_{(i,j)} γ·κ(i,j)·v^{k−1}(h+i, w+j)) with the fixed
  4-connected flow kernel κ (σ(+10) at the centre and edge neighbours, σ(−10) on diagonals) and
  zero padding outside the grid;
* output V = ReLU(v^K − r).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

#: Flow-kernel logits (+10 on the centre and 4-neighbours, −10 on the diagonals).
KERNEL_LOGITS = ((-10.0, 10.0, -10.0), (10.0, 10.0, 10.0), (-10.0, 10.0, -10.0))
MINMAX_EPS = 1e-4


def minmax(x: Tensor) -> Tensor:
    """(x − min)/(max − min + 1e−4) over each [H, W] map of [B, H, W]; min/max carry no gradient."""
    flat = x.flatten(1)
    lo = flat.min(-1).values.detach()[:, None, None]
    hi = flat.max(-1).values.detach()[:, None, None]
    return (x - lo) / (hi - lo + MINMAX_EPS)


def neighbour_max(v: Tensor, weights: Tensor) -> Tensor:
    """Max over the 3×3 neighbourhood of weights(i,j)·v(h+i, w+j), zero padding.

    Args:
        v: [B, H, W] values.
        weights: [3, 3] non-negative weights (γ·κ).

    Returns:
        [B, H, W].
    """
    _b, h, w = v.shape
    padded = F.pad(v, (1, 1, 1, 1))
    shifted = torch.stack(
        [padded[:, i : i + h, j : j + w] * weights[i, j] for i in range(3) for j in range(3)], 0
    )
    return shifted.max(0).values


class MVProp(nn.Module):
    """MVProp2D: propagate goal value through cells the model deems traversable."""

    def __init__(self, feature_dim: int = 96, k: int = 10) -> None:
        super().__init__()
        self.k = k
        self.gather = nn.Linear(feature_dim, 1)
        self.reward_bias = nn.Parameter(torch.zeros(()))
        self.discount_logit = nn.Parameter(torch.ones(()))
        self.register_buffer("kernel", torch.sigmoid(torch.tensor(KERNEL_LOGITS)), persistent=False)

    def forward(self, features: Tensor, goal: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Value map of each state.

        Args:
            features: [B, H, W, F] cell features φ.
            goal: [B, H, W] goal probabilities g = σ(ŷ).

        Returns:
            (p, V, r), each [B, H, W]: propagation map, value map, reward map.
        """
        reward = minmax(torch.relu(goal - self.reward_bias))
        prop = torch.sigmoid(self.gather(features)).squeeze(-1)
        kernel: Tensor = self.kernel  # pyright: ignore[reportAssignmentType]
        weights = torch.sigmoid(self.discount_logit) * kernel
        value = reward
        for _ in range(self.k):
            value = torch.maximum(value, prop * neighbour_max(value, weights))
        return prop, torch.relu(value - reward), reward
