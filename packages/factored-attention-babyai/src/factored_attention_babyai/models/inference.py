"""Eval-only rollout sessions of the BC policies: the same functions, less work per frame.

A greedy rollout calls the policy once per time step on the frames of every running episode.
Much of a plain ``forward`` does not depend on the frame: the mission encoding is constant
within an episode, and in eval mode the weight-derived tables (FiLM's first-layer lookup table,
batch-norm scales) are constant for the whole rollout. A session computes each of these once:

* :meth:`RolloutSession.encode` — per episode: ``missions [N, 5]`` → episode code ``[N, K]``.
* :meth:`RolloutSession.__call__` — per frame: ``(images [N, 8, 8, 3], directions [N],
  codes [N, K])`` → action scores ``[N, 7]``, equal to the policy's ``forward`` in eval mode up
  to float rounding.

:class:`FilmSession` (spec §6.1 policy):

* the first convolution's lookup table is built once, with ``bn0`` folded into it; every other
  eval-mode batch norm is folded into its convolution (scale into the weights, shift into the
  bias);
* per episode, the GRU code q and each FiLM block's ``γ(q)``, ``β(q)`` are computed once, with
  the block's conv bias and ``bn2`` folded in: ``bn2(conv(h)·γ + β) = (W∗h)·γ' + β'``;
* the max-pool (7×7, stride 2, on 8×8) reads only rows and columns 0–6, so the last block's
  second convolution, residual and pool run on that 7×7 window only;
* activations are kept channels-last (the lookup table writes that layout).

:class:`TransformerSession` (spec §6.2 policy):

* per episode, the word encoder runs once; each decoder layer's cross-attention over the 5
  encoded words is folded into per-episode matrices: scores ``x·(W_q,h K_hᵀ)/√d`` and outputs
  ``A_h·(V_h W_o,hᵀ)``, so no per-frame query projection, key/value projection or output
  projection of the cross-attention remains;
* the first decoder layer's q/k/v projection of a token is a sum of 4 rows of one table
  (its three embedding rows and its position, projected once);
* the direction branch and its half of the ``combine`` layer are a 4-row table.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FilmSession", "RolloutSession", "TransformerSession"]


class RolloutSession(Protocol):
    """What :func:`factored_attention_babyai.evaluate.rollout` uses when a policy offers one."""

    def encode(self, missions: Tensor) -> Tensor:
        """``missions [N, 5]`` token ids → per-episode codes ``[N, K]``."""
        ...

    def __call__(self, images: Tensor, directions: Tensor, codes: Tensor) -> Tensor:
        """Frames and their episodes' codes → action scores ``[N, 7]``."""
        ...


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Eval-mode batch norm as ``y = x·scale + shift`` (each ``[C]``)."""
    assert bn.running_mean is not None
    assert bn.running_var is not None
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """``bn(conv(x))`` as one convolution: (channels-last weight ``[O, C, 3, 3]``, bias ``[O]``)."""
    scale, shift = _bn_affine(bn)
    weight = conv.weight * scale[:, None, None, None]
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return weight.contiguous(memory_format=torch.channels_last), bias


class FilmSession:
    """Rollout session of a :class:`~.film.FilmPolicy`.

    Built from the policy's current weights (call it in eval mode; later weight changes are
    not seen).
    """

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        with torch.inference_mode():
            e = policy.cell_embedding.weight  # [64, E]
            w0 = policy.conv0.weight  # [O, 4E, 3, 3]
            o, k = w0.shape[0], policy.channel_offsets.numel()
            per = e.shape[0] // k
            wk = w0.reshape(o, k, e.shape[1], 9)
            ek = e.reshape(k, per, e.shape[1])
            table = torch.einsum("okcs,kvc->skvo", wk, ek).reshape(9, k * per, o)
            scale0, shift0 = _bn_affine(policy.bn0)
            table = torch.cat((table, table.new_zeros(9, 1, o)), dim=1) * scale0
            self.rows = k * per + 1  # table rows per kernel offset (last: out-of-grid)
            self.table = table.reshape(9 * self.rows, o).contiguous()
            self.bias0 = policy.conv0.bias * scale0 + shift0
            self.conv1 = _fold(policy.conv1, policy.bn1)
            self.blocks = []
            for block in policy.films:
                scale2, shift2 = _bn_affine(block.bn2)
                weight2 = block.conv2.weight.contiguous(memory_format=torch.channels_last)
                self.blocks.append((_fold(block.conv1, block.bn1), weight2, scale2, shift2))
        self.channels = o

    def encode(self, missions: Tensor) -> Tensor:
        """``missions [N, 5]`` → ``[N, 4·C]``: (γ', β') of block 1, then of block 2."""
        q = self.policy.encode_mission(missions)  # [N, 128]
        parts = []
        for block, (_, _, scale2, shift2) in zip(self.policy.films, self.blocks, strict=True):
            gamma = block.gamma(q)
            beta = block.beta(q)
            assert block.conv2.bias is not None
            parts.append(gamma * scale2)
            parts.append((block.conv2.bias * gamma + beta) * scale2 + shift2)
        return torch.cat(parts, dim=-1)

    def _first_conv(self, images: Tensor, directions: Tensor) -> Tensor:
        """relu(bn0(conv0(embed))) via the folded table → channels-last ``[N, C, H, W]``."""
        n, h, w, _ = images.shape
        dirs = directions.long()[:, None, None, None].expand(n, h, w, 1)
        cells = torch.cat((images.long(), dirs), dim=-1) + self.policy.channel_offsets
        padded = F.pad(cells.permute(0, 3, 1, 2), (1, 1, 1, 1), value=self.rows - 1)
        shifts = [
            padded[:, :, di : di + h, dj : dj + w] + (3 * di + dj) * self.rows
            for di in range(3)
            for dj in range(3)
        ]
        index = torch.stack(shifts, dim=-1).permute(0, 2, 3, 4, 1).reshape(n * h * w, -1)
        out = F.embedding_bag(index, self.table, mode="sum").add_(self.bias0).relu_()
        return out.reshape(n, h, w, self.channels).permute(0, 3, 1, 2)  # channels-last

    def __call__(self, images: Tensor, directions: Tensor, codes: Tensor) -> Tensor:
        """Action log-probabilities ``[N, 7]`` (see :class:`RolloutSession`)."""
        c = self.channels
        x = self._first_conv(images, directions)
        x = F.conv2d(x, *self.conv1, padding=1).relu_()
        last = len(self.blocks) - 1
        for i, ((w1, b1), w2, _, _) in enumerate(self.blocks):
            gamma = codes[:, 2 * i * c : (2 * i + 1) * c, None, None]
            beta = codes[:, (2 * i + 1) * c : (2 * i + 2) * c, None, None]
            h = F.conv2d(x, w1, b1, padding=1).relu_()
            if i < last:
                x = x + (F.conv2d(h, w2, padding=1) * gamma + beta).relu_()
            else:  # only the 7×7 window the max-pool reads: rows and columns 0..6
                window = F.conv2d(F.pad(h, (1, 0, 1, 0)), w2)  # [N, C, 7, 7]
                x = x[:, :, :7, :7] + (window * gamma + beta).relu_()
        x = x.amax(dim=(2, 3)).relu_()
        p = self.policy
        return torch.log_softmax(p.actor2(torch.tanh(p.actor1(x))), dim=-1)


class TransformerSession:
    """Rollout session of a :class:`~.transformer_policy.TransformerPolicy`.

    Built from the policy's current weights (eval mode; dropout is 0 in this model).
    """

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        layer0: Any = policy.decoder.layers[0]
        self.heads = layer0.self_attn.num_heads
        self.d = layer0.self_attn.embed_dim
        with torch.inference_mode():
            combine = policy.combine.weight  # [D, 2D]
            dirs = policy.direction_projection(policy.direction_embedding.weight)  # [4, D]
            self.direction_table = dirs @ combine[:, self.d :].t() + policy.combine.bias
            self.combine_cls = combine[:, : self.d].t().contiguous()  # [D, D]
            # The first layer's q/k/v projection of a token is linear in its three embedding
            # rows and its position: a sum of 4 rows of one table (CLS: its row + 3 zeros).
            w_in, b_in = layer0.self_attn.in_proj_weight, layer0.self_attn.in_proj_bias
            e = policy.cell_embedding.weight  # [3·R, D/3]
            per, width = e.shape[0] // 3, e.shape[1]
            blocks = [
                e[k * per : (k + 1) * per] @ w_in[:, k * width : (k + 1) * width].t()
                for k in range(3)
            ]
            positions = policy.cell_positions @ w_in.t() + b_in  # [H·W, 3D]
            cls = (policy.cls @ w_in.t() + b_in)[None]
            self.qkv_table = torch.cat((*blocks, positions, cls, torch.zeros_like(cls)))
            cells = positions.shape[0]
            self.position_rows = 3 * per + torch.arange(cells, device=e.device)
            self.cls_bag = torch.tensor(
                [3 * per + cells] + [3 * per + cells + 1] * 3, device=e.device
            )

    def encode(self, missions: Tensor) -> Tensor:
        """``missions [N, L]`` → per decoder layer the folded cross-attention, flattened.

        Per layer and head h, with the layer's keys ``K_h`` and values ``V_h`` of the encoded
        words: ``QKᵀ_h = K_h W_q,h/√dh [L, D]``, ``qb_h = K_h b_q,h/√dh [L]`` and
        ``VO_h = V_h W_o,hᵀ [L, D]``, flattened to ``[N, layers·(2·H·L·D + H·L)]``.
        """
        p = self.policy
        n, length = missions.shape
        words = p.word_embedding(missions.long()) + p.word_positions
        memory = p.encoder(words)  # [N, L, D]
        hd, d = self.heads, self.d
        dh = d // hd
        scale = 1.0 / math.sqrt(dh)
        parts = []
        for layer in p.decoder.layers:
            mha = layer.multihead_attn
            wq, wk, wv = mha.in_proj_weight.chunk(3)
            bq, bk, bv = mha.in_proj_bias.chunk(3)
            keys = (memory @ wk.t() + bk).reshape(n, length, hd, dh) * scale  # [N, L, H, dh]
            values = (memory @ wv.t() + bv).reshape(n, length, hd, dh)
            qk = torch.einsum("nlhd,hde->nhle", keys, wq.reshape(hd, dh, d))  # [N, H, L, D]
            qb = torch.einsum("nlhd,hd->nhl", keys, bq.reshape(hd, dh))
            wo = mha.out_proj.weight.reshape(d, hd, dh)  # [D_out, H, dh]
            vo = torch.einsum("nlhd,ehd->nhle", values, wo)  # [N, H, L, D]
            parts += [qk.flatten(1), qb.flatten(1), vo.flatten(1)]
        return torch.cat(parts, dim=-1)

    def _cross(self, layer: Any, x: Tensor, code: Tensor, length: int) -> Tensor:
        """Cross-attention output (out-projection bias included) for ``x [N, S, D]``.

        Scores are formed transposed, ``[N, H, L, S]``, so the softmax over the L = 5 words
        runs along a non-innermost axis (vectorised over the S tokens).
        """
        n, s, d = x.shape
        hl = self.heads * length
        qk = code[:, : d * hl].reshape(n, hl, d)
        qb = code[:, d * hl : d * hl + hl].reshape(n, hl, 1)
        vo = code[:, d * hl + hl :].reshape(n, hl, d)
        scores = torch.baddbmm(qb, qk, x.transpose(1, 2)).reshape(n, self.heads, length, s)
        weights = torch.softmax(scores, dim=2).reshape(n, hl, s)
        return torch.baddbmm(layer.multihead_attn.out_proj.bias, weights.transpose(1, 2), vo)

    def _self_attention(
        self, layer: Any, q: Tensor, x: Tensor, qkv: Tensor | None = None
    ) -> Tensor:
        """Self-attention of queries ``q [N, Q, D]`` over ``x [N, S, D]`` → ``[N, Q, D]``.

        ``qkv``: the input projection of ``x`` (``[N·S, 3D]``) when known (``q is x``).
        """
        mha = layer.self_attn
        n, s, d = x.shape
        hd, dh = self.heads, d // self.heads
        if q is x:
            if qkv is None:
                qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias)
            qkv = qkv.reshape(n, s, 3, hd, dh)
            query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [N, H, S, dh]
        else:
            wq, wkv = mha.in_proj_weight.split((d, 2 * d))
            bq, bkv = mha.in_proj_bias.split((d, 2 * d))
            query = F.linear(q, wq, bq).reshape(n, -1, hd, dh).transpose(1, 2)
            kv = F.linear(x, wkv, bkv).reshape(n, s, 2, hd, dh)
            key, value = kv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(query, key, value)  # [N, H, Q, dh]
        out = out.transpose(1, 2).reshape(n, -1, d)
        return F.linear(out, mha.out_proj.weight, mha.out_proj.bias)

    @staticmethod
    def _feedforward(layer: Any, x: Tensor) -> Tensor:
        """``linear2(relu(linear1(x)))`` (dropout 0)."""
        return layer.linear2(F.relu(layer.linear1(x)))

    def __call__(self, images: Tensor, directions: Tensor, codes: Tensor) -> Tensor:
        """Action logits ``[N, 7]`` (see :class:`RolloutSession`)."""
        p = self.policy
        n = images.shape[0]
        cells = p.cell_embedding(images.long() + p.channel_offsets)
        cells = cells.reshape(n, -1, cells.shape[-2] * cells.shape[-1]) + p.cell_positions
        x = torch.cat((cells, p.cls.expand(n, 1, -1)), dim=1)  # [N, S, D]
        rows = (images.long() + p.channel_offsets).reshape(n, -1, 3)  # [N, H·W, 3]
        bags = torch.cat((rows, self.position_rows.expand(n, -1)[..., None]), dim=-1)
        bags = torch.cat((bags, self.cls_bag.expand(n, 1, -1)), dim=1)  # [N, S, 4]
        qkv0 = F.embedding_bag(bags.reshape(-1, 4), self.qkv_table, mode="sum")  # [N·S, 3D]
        layers = list(p.decoder.layers)
        length = p.word_positions.shape[0]
        per_layer = codes.shape[1] // len(layers)
        for i, layer in enumerate(layers):
            code = codes[:, i * per_layer : (i + 1) * per_layer]
            if i < len(layers) - 1:
                qkv = qkv0 if i == 0 else None
                x = layer.norm1(x + self._self_attention(layer, x, x, qkv))
                x = layer.norm2(x + self._cross(layer, x, code, length))
                x = layer.norm3(x + self._feedforward(layer, x))
            else:  # the CLS query only (its self-attention still reads every token)
                q = x[:, -1:]
                h = layer.norm1(q + self._self_attention(layer, q, x))
                h = layer.norm2(h + self._cross(layer, h, code, length))
                x = layer.norm3(h + self._feedforward(layer, h))[:, 0]
        hidden = x @ self.combine_cls + self.direction_table[directions.long()]
        return p.actor(hidden)
