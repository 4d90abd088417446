"""FiLM/GRU behaviour-cloning policy (spec §6.1, the original's ``film_lstm_policy``).

"GRU-Encoder ResNet/FiLM Decoder": a BabyAI-style policy without memory.

* Instruction: word embedding (16 × 128) → bidirectional GRU (64 per direction); the final
  hidden states of both directions concatenated → ``q [N, 128]``.
* Image: the direction appended as a 4th channel; channel k with value v → row 16k + v of a
  64 × 128 table; the 4 embeddings concatenated (512 channels).
* Conv 3×3 512→128, BN, ReLU; Conv 3×3 128→128, BN, ReLU.
* Two FiLM blocks, each ``x + ReLU(BN(conv(ReLU(BN(conv(x)))) · γ(q) + β(q)))``.
* Max-pool 7×7 stride 2 (8×8 → 1×1), ReLU → actor Linear(128→64), tanh, Linear(64→7),
  log-softmax.
* Every Linear: normalized-Gaussian-rows init.

Two exact reformulations keep the arithmetic the same while making CPU training affordable:

* The first convolution acts on a bag-of-words embedding, so it equals a sum of table
  lookups: ``T[s, r] = W[:, block(r), s] @ E[r]`` for each of the 9 kernel offsets s and
  64 rows r, then ``conv(E(x))[p] = b + Σ_s Σ_k T[s, 16k + x_k(p + s)]`` (out-of-grid
  neighbours contribute 0, as zero padding does). One 9×64×128×128 product per forward
  replaces a 512-channel convolution per frame.
* Batch normalisation accepts per-frame weights (:class:`WeightedBatchNorm2d`): a padded batch
  can pass one representative frame per run of identical padding frames with the run length
  as its weight, and the statistics (and so the outputs) equal those of the full batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from factored_attention_babyai.models.common import N_ACTIONS, normalized_rows_

if TYPE_CHECKING:
    from factored_attention_babyai.models.inference import FilmSession

__all__ = ["FilmPolicy", "WeightedBatchNorm2d"]

_ROWS_PER_CHANNEL = 16
_IN_CHANNELS = 4  # object, colour, state, direction


class WeightedBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics may weight the batch's samples.

    With integer ``weights`` the result (outputs, running statistics) equals plain batch
    norm over the batch in which sample n is repeated ``weights[n]`` times.
    """

    def forward(self, x: Tensor, weights: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """``x [N, C, H, W]``, ``weights [N]`` or None → ``[N, C, H, W]``."""
        if weights is None or not self.training:
            return super().forward(x)
        x = x.float()  # statistics in float32, also under autocast
        w = weights.to(x.dtype)[:, None, None, None]
        count = w.sum() * x.shape[2] * x.shape[3]
        mean = (w * x).sum(dim=(0, 2, 3)) / count
        centred = x - mean[None, :, None, None]
        var = (w * centred.square()).sum(dim=(0, 2, 3)) / count
        if self.track_running_stats and self.running_mean is not None:
            assert self.running_var is not None
            assert self.num_batches_tracked is not None
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                unbiased = var * count / (count - 1).clamp_min(1.0)
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * unbiased)
                self.num_batches_tracked.add_(1)
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out


class _FiLMBlock(nn.Module):
    """conv → BN → ReLU → conv → ×γ(q) + β(q) → BN → ReLU (the residual add is the caller's)."""

    def __init__(self, channels: int, code: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = WeightedBatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.gamma = normalized_rows_(nn.Linear(code, channels))
        self.beta = normalized_rows_(nn.Linear(code, channels))
        self.bn2 = WeightedBatchNorm2d(channels)

    def forward(self, x: Tensor, q: Tensor, weights: Tensor | None) -> Tensor:
        """``x [N, C, H, W]``, ``q [N, code]`` → ``[N, C, H, W]``."""
        h = F.relu(self.bn1(self.conv1(x), weights))
        h = self.conv2(h) * self.gamma(q)[:, :, None, None] + self.beta(q)[:, :, None, None]
        return F.relu(self.bn2(h, weights))


class FilmPolicy(nn.Module):
    """The FiLM/GRU policy; ``forward`` returns action log-probabilities ``[N, 7]``."""

    channel_offsets: Tensor
    films: nn.ModuleList

    def __init__(
        self,
        n_words: int = 16,
        embed: int = 128,
        channels: int = 128,
        hidden: int = 64,
        n_actions: int = N_ACTIONS,
    ) -> None:
        super().__init__()
        self.word_embedding = nn.Embedding(n_words, embed)
        self.gru = nn.GRU(embed, embed // 2, batch_first=True, bidirectional=True)
        self.cell_embedding = nn.Embedding(_ROWS_PER_CHANNEL * _IN_CHANNELS, embed)
        self.conv0 = nn.Conv2d(_IN_CHANNELS * embed, channels, 3, padding=1)
        self.bn0 = WeightedBatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = WeightedBatchNorm2d(channels)
        self.films = nn.ModuleList([_FiLMBlock(channels, embed) for _ in range(2)])
        self.actor1 = normalized_rows_(nn.Linear(channels, hidden))
        self.actor2 = normalized_rows_(nn.Linear(hidden, n_actions))
        self.register_buffer(
            "channel_offsets",
            torch.arange(_IN_CHANNELS) * _ROWS_PER_CHANNEL,
            persistent=False,
        )

    def encode_mission(self, missions: Tensor) -> Tensor:
        """``missions [N, L]`` token ids → instruction code ``[N, 128]``."""
        _, h = self.gru(self.word_embedding(missions.long()))  # h [2, N, 64]
        return torch.cat((h[0], h[1]), dim=-1)

    def _first_conv(self, cells: Tensor) -> Tensor:
        """conv0 of the bag-of-words embedding via lookups.

        Args:
            cells: ``[N, H, W, 4]`` table rows (16k + value).

        Returns:
            ``[N, 128, H, W]``.
        """
        n, h, w, k = cells.shape
        e = self.cell_embedding.weight  # [64, E]
        weight = self.conv0.weight  # [O, 4E, 3, 3]
        o = weight.shape[0]
        wk = weight.reshape(o, k, e.shape[1], 9)  # [O, k, E, s]
        ek = e.reshape(k, _ROWS_PER_CHANNEL, e.shape[1])  # [k, v, E]
        table = torch.einsum("okcs,kvc->skvo", wk, ek).reshape(9, k * _ROWS_PER_CHANNEL, o)
        blank = table.new_zeros(9, 1, o)  # row of out-of-grid neighbours
        rows = k * _ROWS_PER_CHANNEL + 1
        flat = torch.cat((table, blank), dim=1).reshape(9 * rows, o)
        padded = F.pad(cells.permute(0, 3, 1, 2), (1, 1, 1, 1), value=rows - 1)  # [N, k, H+2, W+2]
        shifts = [
            padded[:, :, di : di + h, dj : dj + w] + (3 * di + dj) * rows
            for di in range(3)
            for dj in range(3)
        ]
        index = torch.stack(shifts, dim=-1).permute(0, 2, 3, 4, 1).reshape(n * h * w, 9 * k)
        out = F.embedding_bag(index, flat, mode="sum")  # [N·H·W, O]
        assert self.conv0.bias is not None
        out = out + self.conv0.bias
        return out.reshape(n, h, w, o).permute(0, 3, 1, 2)

    def forward(
        self,
        images: Tensor,
        directions: Tensor,
        missions: Tensor,
        frame_weights: Tensor | None = None,
    ) -> Tensor:
        """Action log-probabilities of independent frames.

        Args:
            images: ``[N, 8, 8, 3]`` integer (object, colour, state), each value < 16.
            directions: ``[N]`` agent direction 0..3.
            missions: ``[N, 5]`` token ids.
            frame_weights: ``[N]`` multiplicities for the batch-norm statistics in training
                (None: all 1).

        Returns:
            ``[N, 7]`` log-probabilities.
        """
        n, h, w, _ = images.shape
        q = self.encode_mission(missions)
        dirs = directions.long()[:, None, None, None].expand(n, h, w, 1)
        cells = torch.cat((images.long(), dirs), dim=-1) + self.channel_offsets
        x = F.relu(self.bn0(self._first_conv(cells), frame_weights))
        x = F.relu(self.bn1(self.conv1(x), frame_weights))
        for block in self.films:
            x = x + block(x, q, frame_weights)
        x = F.relu(F.max_pool2d(x, kernel_size=7, stride=2)).flatten(1)
        return torch.log_softmax(self.actor2(torch.tanh(self.actor1(x))), dim=-1)

    def rollout_session(self) -> FilmSession:
        """An eval-only :class:`~.inference.FilmSession` of the current weights (for rollouts)."""
        from factored_attention_babyai.models.inference import FilmSession

        return FilmSession(self)

    def reference_first_conv(self, images: Tensor, directions: Tensor) -> Tensor:
        """conv0 computed the direct way (embed 512 channels, then convolve); for tests.

        Returns:
            ``[N, 128, 8, 8]``.
        """
        n, h, w, _ = images.shape
        dirs = directions.long()[:, None, None, None].expand(n, h, w, 1)
        cells = torch.cat((images.long(), dirs), dim=-1) + self.channel_offsets
        emb = self.cell_embedding(cells).reshape(n, h, w, -1).permute(0, 3, 1, 2)
        return self.conv0(emb)
