"""Encoder–decoder Transformer behaviour-cloning policy (spec §6.2).

The original's ``sentence_encoder_image_decoder`` (a.k.a. ``pure_transformer``).

* Words: embedding (32 × 96) + 1-D sinusoidal positions → encoder, 1 post-norm layer.
* Cells: channel k with value v → row 32k + v of a 96 × 32 table, the 3 embeddings
  concatenated (96) + 2-D sinusoidal positions (rows in channels 0–47, columns in 48–95);
  a learned CLS token (N(0, 1)) appended after the 64 cells → decoder, 4 post-norm layers
  cross-attending to the words. d_model 96, 4 heads, feed-forward 192, dropout 0, ReLU,
  no masks, no final norms.
* Direction: embedding 4 × 32 → Linear(32→96); concatenated with the CLS output (192) →
  Linear(192→96), no activation.
* Actor: Linear(96→384, no bias) → ReLU → Linear(384→7, no bias) → logits.

Only the CLS output is read, so the last decoder layer is evaluated for the CLS query alone
(its self-attention still attends over all 65 tokens): the same function as running the
layer on every token and keeping the last, for about a quarter of that layer's arithmetic
(:meth:`TransformerPolicy.decode_cls`; tested against the full decoder).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from factored_attention_babyai.models.common import N_ACTIONS, sinusoid_1d, sinusoid_2d

if TYPE_CHECKING:
    from factored_attention_babyai.models.inference import TransformerSession

__all__ = ["TransformerPolicy"]

_ROWS_PER_CHANNEL = 32


class TransformerPolicy(nn.Module):
    """The encoder–decoder Transformer policy; ``forward`` returns logits ``[N, 7]``."""

    word_positions: Tensor
    cell_positions: Tensor
    channel_offsets: Tensor

    def __init__(
        self,
        n_words: int = 32,
        d_model: int = 96,
        heads: int = 4,
        feedforward: int = 192,
        encoder_layers: int = 1,
        decoder_layers: int = 4,
        mission_length: int = 5,
        grid: int = 8,
        n_actions: int = N_ACTIONS,
    ) -> None:
        super().__init__()
        cell_dim = d_model // 3
        self.word_embedding = nn.Embedding(n_words, d_model)
        self.cell_embedding = nn.Embedding(3 * _ROWS_PER_CHANNEL, cell_dim)
        self.register_buffer("word_positions", sinusoid_1d(mission_length, d_model))
        self.register_buffer(
            "cell_positions", sinusoid_2d(grid, grid, d_model).reshape(grid * grid, d_model)
        )
        self.register_buffer(
            "channel_offsets", torch.arange(3) * _ROWS_PER_CHANNEL, persistent=False
        )
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(
                d_model, heads, feedforward, dropout=0.0, batch_first=True, norm_first=False
            ),
            encoder_layers,
            enable_nested_tensor=False,
        )
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(
                d_model, heads, feedforward, dropout=0.0, batch_first=True, norm_first=False
            ),
            decoder_layers,
        )
        self.cls = nn.Parameter(torch.randn(d_model))
        self.direction_embedding = nn.Embedding(4, 32)
        self.direction_projection = nn.Linear(32, d_model)
        self.combine = nn.Linear(2 * d_model, d_model)
        self.actor = nn.Sequential(
            nn.Linear(d_model, 4 * d_model, bias=False),
            nn.ReLU(),
            nn.Linear(4 * d_model, n_actions, bias=False),
        )

    def decode_cls(self, tokens: Tensor, memory: Tensor) -> Tensor:
        """Decoder output at the last (CLS) token.

        Args:
            tokens: ``[N, S, D]`` decoder input (cells then CLS).
            memory: ``[N, L, D]`` encoded words.

        Returns:
            ``[N, D]``, equal to ``self.decoder(tokens, memory)[:, -1]``.
        """
        layers = list(self.decoder.layers)
        x = tokens
        for layer in layers[:-1]:
            x = layer(x, memory)
        last: Any = layers[-1]
        q = x[:, -1:]
        h = last.norm1(q + last.self_attn(q, x, x, need_weights=False)[0])
        h = last.norm2(h + last.multihead_attn(h, memory, memory, need_weights=False)[0])
        h = last.norm3(h + last.linear2(last.activation(last.linear1(h))))
        return h[:, 0]

    def rollout_session(self) -> TransformerSession:
        """An eval-only :class:`~.inference.TransformerSession` of the current weights."""
        from factored_attention_babyai.models.inference import TransformerSession

        return TransformerSession(self)

    def forward(
        self,
        images: Tensor,
        directions: Tensor,
        missions: Tensor,
        frame_weights: Tensor | None = None,
    ) -> Tensor:
        """Action logits of independent frames.

        Args:
            images: ``[N, 8, 8, 3]`` integer (object, colour, state), each value < 32.
            directions: ``[N]`` agent direction 0..3.
            missions: ``[N, 5]`` token ids.
            frame_weights: unused (the frames do not interact); accepted so that both
                policies share one signature.

        Returns:
            ``[N, 7]`` logits.
        """
        del frame_weights
        n = images.shape[0]
        words = self.word_embedding(missions.long()) + self.word_positions  # [N, L, D]
        memory = self.encoder(words)
        cells = self.cell_embedding(images.long() + self.channel_offsets)  # [N, H, W, 3, D/3]
        cells = cells.reshape(n, -1, cells.shape[-2] * cells.shape[-1]) + self.cell_positions
        tokens = torch.cat((cells, self.cls.expand(n, 1, -1)), dim=1)  # [N, H·W + 1, D]
        cls_out = self.decode_cls(tokens, memory)
        direction = self.direction_projection(self.direction_embedding(directions.long()))
        return self.actor(self.combine(torch.cat((cls_out, direction), dim=-1)))
