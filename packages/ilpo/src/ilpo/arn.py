"""Action Remapping Network (ARN) π_ξ(a|s, z), latent labelling and acting.

Notation: B batch, Z latent actions, A real actions, d state dimension.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ilpo.lpn import ConvEncoder, ImageLPN, VectorLPN, _glorot_linear, lrelu

Acting = Literal["greedy-greedy", "marginal"]
ACTING: tuple[Acting, ...] = ("greedy-greedy", "marginal")


class VectorARN(nn.Module):
    """ARN for vector states with its own encoder (``d → ngf → 2·ngf``, freshly initialised).

    ``h = LReLU(E(s))``, ``v = LReLU(W onehot(z))``, ``[h ; v] → 64 → LReLU → 32 → LReLU → A``.
    """

    def __init__(self, state_dim: int, n_latent: int, n_actions: int, ngf: int = 128) -> None:
        super().__init__()
        self.n_latent = n_latent
        self.n_actions = n_actions
        width = 2 * ngf
        self.enc1 = _glorot_linear(state_dim, ngf)
        self.enc2 = _glorot_linear(ngf, width)
        self.embed = _glorot_linear(n_latent, width)
        self.fc1 = _glorot_linear(2 * width, 64)
        self.fc2 = _glorot_linear(64, 32)
        self.out = _glorot_linear(32, n_actions)

    def _state_code(self, s: Tensor) -> Tensor:
        return lrelu(self.enc2(lrelu(self.enc1(s))))

    def _head(self, x: Tensor) -> Tensor:
        return self.out(lrelu(self.fc2(lrelu(self.fc1(x)))))

    def forward(self, s: Tensor, z: Tensor) -> Tensor:
        """``s [B, d]``, ``z [B]`` (int64) → logits ``[B, A]``."""
        h = self._state_code(s)
        v = lrelu(self.embed.weight.t()[z] + self.embed.bias)  # [B, W] = embed(onehot(z))
        return self._head(torch.cat([h, v], dim=1))

    def all_latents(self, s: Tensor) -> Tensor:
        """``s [B, d]`` → logits for every latent ``[B, Z, A]`` (one batched pass)."""
        h = self._state_code(s)  # [B, W]
        v = lrelu(self.embed.weight.t() + self.embed.bias)  # [Z, W]
        b, z = h.shape[0], v.shape[0]
        x = torch.cat([h.unsqueeze(1).expand(b, z, -1), v.unsqueeze(0).expand(b, z, -1)], dim=2)
        return self._head(x)


class ImageARN(nn.Module):
    """ARN for 128×128 frames: conv encoder (→ 8·ngf), ``[h ; v] → 64 → 64 → A``."""

    def __init__(self, n_latent: int, n_actions: int, ngf: int = 15) -> None:
        super().__init__()
        self.n_latent = n_latent
        self.n_actions = n_actions
        width = 8 * ngf
        self.encoder = ConvEncoder(ngf)
        self.embed = _glorot_linear(n_latent, width)
        self.fc1 = _glorot_linear(2 * width, 64)
        self.fc2 = _glorot_linear(64, 64)
        self.out = _glorot_linear(64, n_actions)

    def _state_code(self, x: Tensor) -> Tensor:
        return lrelu(self.encoder(x)[-1].flatten(1))

    def _head(self, x: Tensor) -> Tensor:
        return self.out(lrelu(self.fc2(lrelu(self.fc1(x)))))

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """``x [B, 3, 128, 128]``, ``z [B]`` → logits ``[B, A]``."""
        h = self._state_code(x)
        v = lrelu(self.embed.weight.t()[z] + self.embed.bias)
        return self._head(torch.cat([h, v], dim=1))

    def all_latents(self, x: Tensor) -> Tensor:
        """``x [B, 3, 128, 128]`` → logits ``[B, Z, A]``."""
        h = self._state_code(x)
        v = lrelu(self.embed.weight.t() + self.embed.bias)
        b, z = h.shape[0], v.shape[0]
        cat = torch.cat([h.unsqueeze(1).expand(b, z, -1), v.unsqueeze(0).expand(b, z, -1)], dim=2)
        return self._head(cat)


ARN = VectorARN | ImageARN


def label_vector(s: Tensor, s_next: Tensor, deltas: Tensor, scale: Tensor | None = None) -> Tensor:
    """z* = argmin_z ‖(s' − (s + Δ̂_z)) / scale‖ for vector states.

    ``s, s_next [B, d]``, ``deltas [B, Z, d]`` (the frozen LPN's predictions at s), ``scale [d]``
    (None: raw state units, the original's choice) → ``z* [B]``.
    """
    resid = (s_next - s).unsqueeze(1) - deltas  # [B, Z, d]
    if scale is not None:
        resid = resid / scale
    return resid.square().sum(-1).argmin(dim=1)


def _requantize(x: Tensor) -> Tensor:
    """[−1, 1] image → 8-bit (clipped, rounded) → back to [−1, 1]."""
    pixels = torch.round(((x + 1) / 2 * 255).clamp(0, 255))
    return pixels / 255 * 2 - 1


@torch.no_grad()
def label_image(lpn: ImageLPN, s: Tensor, s_next: Tensor, deltas: Tensor | None = None) -> Tensor:
    """z* for frames: distance between LPN encodings E(s') and E(ŝ'_z) (bottleneck, pre-activation).

    ``s, s_next [B, 3, 128, 128]`` in [−1, 1]; ``deltas [B, Z, 3, 128, 128]`` (computed if None);
    ŝ'_z = s + Δ̂_z is converted to an 8-bit image and back before encoding → ``z* [B]``.
    """
    pred_deltas = lpn(s)[1] if deltas is None else deltas
    b, z = pred_deltas.shape[:2]
    pred = _requantize(s.unsqueeze(1) + pred_deltas).reshape(b * z, *s.shape[1:])
    e_pred = lpn.encode(pred).reshape(b, z, -1)
    e_next = lpn.encode(s_next).unsqueeze(1)
    return (e_pred - e_next).square().sum(-1).argmin(dim=1)


def choose_actions(probs: Tensor, arn: ARN, s: Tensor, acting: Acting = "greedy-greedy") -> Tensor:
    """Greedy ILPO actions ``[B]`` from the latent policy ``probs [B, Z]`` and the ARN.

    ``greedy-greedy`` (the original's code): z = argmax π_ω(z|s), a = argmax π_ξ(a|s, z).
    ``marginal`` (the paper's formula): a = argmax Σ_z π_ξ(a|s, z) π_ω(z|s).
    """
    if acting == "greedy-greedy":
        return arn(s, probs.argmax(dim=1)).argmax(dim=1)
    if acting == "marginal":
        pa = torch.softmax(arn.all_latents(s), dim=2)  # [B, Z, A]
        return (probs.unsqueeze(2) * pa).sum(1).argmax(dim=1)
    raise ValueError(f"unknown acting mode {acting!r}")


def make_arn(lpn: VectorLPN | ImageLPN, n_actions: int, state_dim: int | None = None) -> ARN:
    """A fresh ARN matching an LPN (same encoder kind, |Z| inputs, ``n_actions`` outputs)."""
    if isinstance(lpn, ImageLPN):
        return ImageARN(lpn.n_latent, n_actions, ngf=lpn.ngf)
    return VectorARN(state_dim or lpn.state_dim, lpn.n_latent, n_actions, ngf=lpn.ngf)
