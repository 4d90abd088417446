"""Latent Policy Network (LPN): a latent policy π_ω(z|s) and a multimodal forward model G(s, z).

Two architectures share one interface (``forward(s) -> (logits, deltas)``):

* :class:`VectorLPN` — the MLP of the paper's classic-control experiments;
* :class:`ImageLPN` — a pix2pix-style U-Net without norm layers for 128×128 RGB frames.

Every latent branch is computed in one batched pass: the latent embedding of all |Z| one-hot
codes is a ``[Z, H]`` matrix added to the (shared) state projection, and the decoder runs on a
``[B, Z, ...]`` (vector) or ``[B·Z, ...]`` (image) batch. There is no Python loop over latents.

Notation: B batch, Z number of latent actions, d state dimension, H hidden width.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ilpo.lpn_native import native_step

LRELU_SLOPE = 0.2


def lrelu(x: Tensor) -> Tensor:
    """Leaky ReLU with slope 0.2."""
    return F.leaky_relu(x, LRELU_SLOPE)


def _lrelu_grad(grad: Tensor, x: Tensor) -> Tensor:
    """Backward of :func:`lrelu` at its input ``x``."""
    return torch.ops.aten.leaky_relu_backward(grad, x, LRELU_SLOPE, False)


def _grad(p: Tensor) -> Tensor:
    """``p.grad``, which :class:`FlatAdam` attaches (a view into its flat gradient)."""
    if p.grad is None:
        raise RuntimeError("attach gradient buffers first (make_optimizer / FlatAdam)")
    return p.grad


def _glorot_linear(n_in: int, n_out: int) -> nn.Linear:
    """Affine layer with Glorot-uniform weights and zero biases (TF-slim's defaults)."""
    layer = nn.Linear(n_in, n_out)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class VectorLPN(nn.Module):
    """Vector LPN.

    Encoder ``d → ngf → 2·ngf`` (pre-activation code e), policy head on ``h = LReLU(e)``,
    latent embedding ``u_z = LReLU(W_u onehot(z))``, joint code ``j_z = W_j [h ; u_z]``, decoder
    ``LReLU → 2·ngf → ngf → LReLU → d`` giving the predicted state change Δ̂_z(s).
    """

    def __init__(self, state_dim: int, n_latent: int, ngf: int = 128) -> None:
        super().__init__()
        self.state_dim = state_dim
        self.n_latent = n_latent
        self.ngf = ngf
        width = 2 * ngf
        self.enc1 = _glorot_linear(state_dim, ngf)
        self.enc2 = _glorot_linear(ngf, width)
        self.policy = _glorot_linear(width, n_latent)
        self.embed = _glorot_linear(n_latent, width)
        self.joint = _glorot_linear(2 * width, width)
        self.dec1 = _glorot_linear(width, ngf)
        self.dec2 = _glorot_linear(ngf, state_dim)

    def encode(self, s: Tensor) -> Tensor:
        """``s [B, d]`` → pre-activation encoding ``e [B, 2·ngf]``."""
        return self.enc2(lrelu(self.enc1(s)))

    def generator_parameters(self) -> list[nn.Parameter]:
        """Parameters of G that the policy head does not own (embedding, joint layer, decoder)."""
        mods = (self.embed, self.joint, self.dec1, self.dec2)
        return [p for m in mods for p in m.parameters()]

    def policy_parameters(self) -> list[nn.Parameter]:
        """Parameters of the latent policy head."""
        return list(self.policy.parameters())

    def forward(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """``s [B, d]`` → ``(logits [B, Z], deltas [B, Z, d])``."""
        h = lrelu(self.encode(s))  # [B, W]
        logits = self.policy(h)  # [B, Z]
        width = h.shape[1]
        u = lrelu(self.embed.weight.t() + self.embed.bias)  # [Z, W]: embed(onehot(z)) for all z
        w_h = self.joint.weight[:, :width]  # [W, W]
        w_u = self.joint.weight[:, width:]  # [W, W]
        j = (h @ w_h.t()).unsqueeze(1) + (u @ w_u.t() + self.joint.bias).unsqueeze(0)  # [B, Z, W]
        deltas = self.dec2(lrelu(self.dec1(lrelu(j))))  # [B, Z, d]
        return logits, deltas

    @torch.no_grad()
    def loss_and_grads(self, s: Tensor, s_next: Tensor) -> LPNLosses:
        """L_min + L_exp and its exact gradient, written into every ``.grad`` (no autograd).

        Float32 on CPU with the parameters in a :class:`FlatAdam`'s buffers, the whole step
        runs in one native (C) call (:mod:`ilpo.lpn_native`); otherwise, or with
        ``lpn_native.set_backend("torch")``, :meth:`loss_and_grads_torch`. Same function,
        equal to float32 rounding. ``s, s_next [B, d]``.
        """
        out = native_step(self, s, s_next)
        if out is None:
            return self.loss_and_grads_torch(s, s_next)
        losses, best, probs = out
        return LPNLosses(losses[0], losses[1], losses[2], best, probs)

    @torch.no_grad()
    def loss_and_grads_torch(self, s: Tensor, s_next: Tensor) -> LPNLosses:
        """:meth:`loss_and_grads` as PyTorch ops (the reference the native kernel is tested on).

        Same result as ``lpn_losses(*self(s), s_next - s).loss.backward()`` on zeroed
        gradients, with the stop-gradient of L_exp. L_min's gradient reaches the decoder only
        through each sample's best latent, so the backward pass of the generator runs on
        ``B`` rows instead of ``B·Z``. ``s, s_next [B, d]``.
        """
        b, z = s.shape[0], self.n_latent
        w1, w2 = self.enc1.weight, self.enc2.weight
        wp, we, wj = self.policy.weight, self.embed.weight, self.joint.weight
        wd1, wd2 = self.dec1.weight, self.dec2.weight
        width = w2.shape[0]
        slope = LRELU_SLOPE
        # forward
        a1 = torch.addmm(self.enc1.bias, s, w1.t())  # [B, G]
        x1 = F.leaky_relu(a1, slope)
        e = torch.addmm(self.enc2.bias, x1, w2.t())  # [B, W]
        h = F.leaky_relu(e, slope)
        logits = torch.addmm(self.policy.bias, h, wp.t())  # [B, Z]
        u_pre = we.t() + self.embed.bias  # [Z, W]
        u = F.leaky_relu(u_pre, slope)
        w_h, w_u = wj[:, :width], wj[:, width:]
        j = (h @ w_h.t()).unsqueeze(1) + torch.addmm(self.joint.bias, u, w_u.t()).unsqueeze(0)
        x3 = F.leaky_relu(j, slope)  # [B, Z, W]
        a4 = torch.addmm(self.dec1.bias, x3.reshape(b * z, width), wd1.t())  # [B·Z, G]
        x4 = F.leaky_relu(a4, slope)
        deltas = torch.addmm(self.dec2.bias, x4, wd2.t()).reshape(b, z, -1)  # [B, Z, d]
        target = s_next - s
        resid = target.unsqueeze(1) - deltas  # [B, Z, d]
        err = resid.square().sum(-1)
        min_err, best = err.min(dim=1)
        probs = torch.softmax(logits, dim=1)
        mix_resid = target - (probs.unsqueeze(2) * deltas).sum(1)  # [B, d]
        min_loss = min_err.mean()
        exp_loss = mix_resid.square().sum(-1).mean()
        # backward of L_exp (policy head and encoder; deltas are constants)
        dp = -(2.0 / b) * torch.bmm(deltas, mix_resid.unsqueeze(2)).squeeze(2)  # [B, Z]
        dlogits = probs * (dp - (probs * dp).sum(1, keepdim=True))
        # backward of L_min through each sample's best latent only
        rows = torch.arange(b, device=s.device)
        d_delta = (-2.0 / b) * resid[rows, best]  # [B, d]
        x4_sel = x4.reshape(b, z, -1)[rows, best]  # [B, G]
        a4_sel = a4.reshape(b, z, -1)[rows, best]
        j_sel = j[rows, best]  # [B, W]
        x3_sel = x3[rows, best]
        torch.mm(d_delta.t(), x4_sel, out=_grad(self.dec2.weight))
        torch.sum(d_delta, 0, out=_grad(self.dec2.bias))
        da4 = _lrelu_grad(d_delta @ wd2, a4_sel)  # [B, G]
        torch.mm(da4.t(), x3_sel, out=_grad(self.dec1.weight))
        torch.sum(da4, 0, out=_grad(self.dec1.bias))
        dj = _lrelu_grad(da4 @ wd1, j_sel)  # [B, W]
        dj_per_latent = torch.zeros(z, width, dtype=s.dtype, device=s.device)
        dj_per_latent.index_add_(0, best, dj)  # [Z, W]: Σ of dj over the samples of each z
        gj = _grad(self.joint.weight)
        torch.mm(dj.t(), h, out=gj[:, :width])
        torch.mm(dj_per_latent.t(), u, out=gj[:, width:])  # = dj.t() @ u[best], Z ≪ B rows
        torch.sum(dj, 0, out=_grad(self.joint.bias))
        du = dj_per_latent @ w_u  # [Z, W]
        du_pre = _lrelu_grad(du, u_pre)  # [Z, W]
        _grad(self.embed.weight).copy_(du_pre.t())
        torch.sum(du_pre, 0, out=_grad(self.embed.bias))
        torch.mm(dlogits.t(), h, out=_grad(self.policy.weight))
        torch.sum(dlogits, 0, out=_grad(self.policy.bias))
        dh = dj @ w_h + dlogits @ wp  # [B, W]
        de = _lrelu_grad(dh, e)
        torch.mm(de.t(), x1, out=_grad(self.enc2.weight))
        torch.sum(de, 0, out=_grad(self.enc2.bias))
        da1 = _lrelu_grad(de @ w2, a1)
        torch.mm(da1.t(), s, out=_grad(self.enc1.weight))
        torch.sum(da1, 0, out=_grad(self.enc1.bias))
        return LPNLosses(min_loss + exp_loss, min_loss, exp_loss, best, probs)


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=False)
    nn.init.normal_(conv.weight, 0.0, 0.02)
    return conv


def _deconv(c_in: int, c_out: int) -> nn.ConvTranspose2d:
    deconv = nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False)
    nn.init.normal_(deconv.weight, 0.0, 0.02)
    return deconv


IMAGE_SIZE = 128


class ConvEncoder(nn.Module):
    """Seven 4×4 stride-2 convolutions 128² → 1² (LReLU before every conv but the first).

    Channels ``ngf, 2ngf, 4ngf, 8ngf, 8ngf, 8ngf, 8ngf``. Returns every stage's pre-activation map
    (the last one, ``[B, 8ngf, 1, 1]``, is the bottleneck e).
    """

    def __init__(self, ngf: int = 15, in_channels: int = 3) -> None:
        super().__init__()
        chans = [ngf, 2 * ngf, 4 * ngf, 8 * ngf, 8 * ngf, 8 * ngf, 8 * ngf]
        self.channels = chans
        prev = in_channels
        convs = []
        for c in chans:
            convs.append(_conv(prev, c))
            prev = c
        self.convs = nn.ModuleList(convs)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``x [B, 3, 128, 128]`` → list of 7 maps, the last ``[B, 8·ngf, 1, 1]``."""
        feats = []
        out = x
        for i, conv in enumerate(self.convs):
            out = conv(out if i == 0 else lrelu(out))
            feats.append(out)
        return feats


class ImageLPN(nn.Module):
    """U-Net LPN for 128×128×3 frames in [−1, 1].

    The bottleneck code is replaced by ``j_z = W_j [h ; u_z]`` (one per latent); skip connections
    carry s at every other resolution. The decoder runs once on a ``[B·Z, ...]`` batch; the output
    is the predicted change Δ̂_z in the [−1, 1] pixel scale (linear, no tanh).
    """

    def __init__(self, n_latent: int, ngf: int = 15) -> None:
        super().__init__()
        self.n_latent = n_latent
        self.ngf = ngf
        self.encoder = ConvEncoder(ngf)
        width = 8 * ngf
        self.policy = _glorot_linear(width, n_latent)
        self.embed = _glorot_linear(n_latent, width)
        self.joint = _glorot_linear(2 * width, width)
        enc = self.encoder.channels  # [ngf, 2ngf, 4ngf, 8ngf, 8ngf, 8ngf, 8ngf]
        outs = [8 * ngf, 8 * ngf, 8 * ngf, 4 * ngf, 2 * ngf, ngf, 3]
        ins = [width] + [outs[i] + enc[5 - i] for i in range(6)]
        self.deconvs = nn.ModuleList(_deconv(i, o) for i, o in zip(ins, outs, strict=True))

    @property
    def code_dim(self) -> int:
        """Width of the bottleneck code e."""
        return 8 * self.ngf

    def encode(self, x: Tensor) -> Tensor:
        """``x [B, 3, 128, 128]`` → pre-activation bottleneck ``e [B, 8·ngf]``."""
        return self.encoder(x)[-1].flatten(1)

    def generator_parameters(self) -> list[nn.Parameter]:
        """Parameters of G the policy head does not own (embedding, joint layer, deconvs)."""
        mods: list[nn.Module] = [self.embed, self.joint, self.deconvs]
        return [p for m in mods for p in m.parameters()]

    def policy_parameters(self) -> list[nn.Parameter]:
        """Parameters of the latent policy head."""
        return list(self.policy.parameters())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x [B, 3, 128, 128]`` → ``(logits [B, Z], deltas [B, Z, 3, 128, 128])``."""
        if x.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(
                f"ImageLPN expects {IMAGE_SIZE}×{IMAGE_SIZE} frames, got {tuple(x.shape)}"
            )
        feats = self.encoder(x)
        b = x.shape[0]
        z = self.n_latent
        width = self.code_dim
        h = lrelu(feats[-1].flatten(1))  # [B, W]
        logits = self.policy(h)
        u = lrelu(self.embed.weight.t() + self.embed.bias)  # [Z, W]
        w_h = self.joint.weight[:, :width]
        w_u = self.joint.weight[:, width:]
        j = (h @ w_h.t()).unsqueeze(1) + (u @ w_u.t() + self.joint.bias).unsqueeze(0)  # [B, Z, W]
        out = self.deconvs[0](lrelu(j.reshape(b * z, width, 1, 1)))  # [B·Z, 8ngf, 2, 2]
        for i in range(1, 7):
            skip = feats[6 - i]  # [B, C, r, r]
            skip = skip.unsqueeze(1).expand(b, z, *skip.shape[1:]).reshape(b * z, *skip.shape[1:])
            out = self.deconvs[i](lrelu(torch.cat([out, skip], dim=1)))
        return logits, out.reshape(b, z, *out.shape[1:])


LPN = VectorLPN | ImageLPN


class LPNLosses(NamedTuple):
    """Both LPN losses with the per-sample best latent and the latent policy."""

    loss: Tensor  # L_min + L_exp
    min_loss: Tensor  # L_min
    exp_loss: Tensor  # L_exp
    best: Tensor  # [B] argmin_z err_z
    probs: Tensor  # [B, Z] π_ω(z|s)


def lpn_losses(logits: Tensor, deltas: Tensor, target: Tensor) -> LPNLosses:
    """Min-over-latents and expected-next-state losses.

    ``logits [B, Z]``, ``deltas [B, Z, *S]`` (predicted changes), ``target [B, *S]`` (observed
    change s' − s). ``err_z = Σ (Δ − Δ̂_z)²`` over all state entries;
    ``L_min = mean_B min_z err_z`` (trains the generator and encoder);
    ``L_exp = mean_B Σ (Δ − Σ_z π_z · stopgrad(Δ̂_z))²`` (trains the policy head and encoder).
    """
    b, z = logits.shape
    diff = (target.unsqueeze(1) - deltas).reshape(b, z, -1)
    err = diff.square().sum(-1)  # [B, Z]
    min_err, best = err.min(dim=1)
    min_loss = min_err.mean()
    probs = torch.softmax(logits, dim=1)
    shape = (b, z) + (1,) * (deltas.dim() - 2)
    mix = (probs.reshape(shape) * deltas.detach()).sum(1)  # [B, *S]
    exp_loss = (target - mix).reshape(b, -1).square().sum(-1).mean()
    return LPNLosses(min_loss + exp_loss, min_loss, exp_loss, best, probs)


_FUSED_ADAM = getattr(torch, "_fused_adam_", None)
"""torch's fused Adam kernel (what ``torch.optim.Adam(fused=True)`` calls; CPU since 2.4)."""


class FlatAdam:
    """Adam over one flat buffer: a handful of vector ops per step instead of a dozen per tensor.

    The parameters (and their ``.grad``) become views into two flat tensors, so autograd
    accumulates straight into the flat gradient. Same update as ``torch.optim.Adam``
    (bias-corrected, ε added to the corrected √v). Create it after moving the model to its
    device.
    """

    def __init__(
        self, params: list[nn.Parameter], lr: float, betas: tuple[float, float], eps: float = 1e-8
    ) -> None:
        self.params = params
        self.lr = lr
        self.betas = betas
        self.eps = eps
        n = sum(p.numel() for p in params)
        ref = params[0]
        self.flat = torch.zeros(n, dtype=ref.dtype, device=ref.device)
        self.grad = torch.zeros_like(self.flat)
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self._denom = torch.zeros_like(self.flat)
        self._step_t = torch.zeros((), dtype=torch.float32, device=ref.device)
        self.steps = 0
        offset = 0
        for p in params:
            k = p.numel()
            self.flat[offset : offset + k].copy_(p.detach().reshape(-1))
            p.data = self.flat[offset : offset + k].view_as(p)
            p.grad = self.grad[offset : offset + k].view_as(p)
            offset += k

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the flat gradient (the views stay attached; ``set_to_none`` is ignored)."""
        del set_to_none
        self.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One Adam update of every parameter (torch's fused single-pass kernel if present)."""
        self.steps += 1
        b1, b2 = self.betas
        if _FUSED_ADAM is not None:
            self._step_t.fill_(self.steps)
            _FUSED_ADAM(
                [self.flat],
                [self.grad],
                [self.exp_avg],
                [self.exp_avg_sq],
                [],
                [self._step_t],
                lr=self.lr,
                beta1=b1,
                beta2=b2,
                weight_decay=0.0,
                eps=self.eps,
                amsgrad=False,
                maximize=False,
            )
            return
        self.exp_avg.lerp_(self.grad, 1 - b1)
        self.exp_avg_sq.mul_(b2).addcmul_(self.grad, self.grad, value=1 - b2)
        torch.sqrt(self.exp_avg_sq, out=self._denom)
        self._denom.div_(math.sqrt(1 - b2**self.steps)).add_(self.eps)
        self.flat.addcdiv_(self.exp_avg, self._denom, value=-self.lr / (1 - b1**self.steps))

    def state_dict(self) -> dict[str, Any]:
        """Moments and step count (plain tensors and ints)."""
        return {
            "steps": self.steps,
            "exp_avg": self.exp_avg.clone(),
            "exp_avg_sq": self.exp_avg_sq.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.steps = int(state["steps"])
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])


def make_optimizer(model: nn.Module, lr: float = 2e-4, beta1: float = 0.5) -> FlatAdam:
    """Adam as in the original (lr 2e-4, β1 0.5, β2 0.999), over a flat buffer."""
    return FlatAdam(list(model.parameters()), lr=lr, betas=(beta1, 0.999))


def train_step(model: nn.Module, opt: FlatAdam, s: Tensor, s_next: Tensor) -> LPNLosses:
    """One Adam step on L_min + L_exp for a batch ``s, s_next [B, *S]``.

    The vector LPN uses its hand-written backward (:meth:`VectorLPN.loss_and_grads`, which
    needs the ``.grad`` views a :class:`FlatAdam` attaches); other models use autograd.
    """
    if isinstance(model, VectorLPN):
        out = model.loss_and_grads(s, s_next)
        opt.step()
        return out
    logits, deltas = model(s)
    out = lpn_losses(logits, deltas, s_next - s)
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    return out


@torch.no_grad()
def latent_usage(best: Tensor, probs: Tensor, n_latent: int) -> dict[str, list[float]]:
    """Fractions of ``argmin_z err_z`` and of ``argmax_z π(z|s)`` per latent."""
    n = max(int(best.numel()), 1)
    return {
        "min_usage": (torch.bincount(best, minlength=n_latent).float() / n).tolist(),
        "policy_usage": (torch.bincount(probs.argmax(1), minlength=n_latent).float() / n).tolist(),
    }


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters())
