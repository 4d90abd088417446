"""Timings of the LPN training step and of the online stage (``ilpo bench``).

* LPN step: :func:`ilpo.lpn.train_step` (all |Z| branches in one batched pass, a hand-written
  backward that sends L_min's gradient through each sample's best latent only, and torch's
  fused Adam kernel over one flat parameter buffer; the forward and backward pass run as one
  native call, :mod:`ilpo.lpn_native`, where a C compiler is available)
  against a straightforward reference written here — a Python loop over the latents, each
  branch concatenating ``[h ; u_z]`` and running the decoder on its own, with torch's default
  Adam. Same architecture and data; the ratio is reported. The same batched step as PyTorch
  ops (``lpn_native.set_backend("torch")``) is timed beside them.
* Multiply-adds of one step for both (:func:`step_macs`): the batched step does about 2.5×
  fewer, which bounds the PyTorch-ops step's ratio (both run their products at torch's
  rate); the native step also runs its products faster and skips the per-op dispatch.
* Faithful LPN estimate: the step time × 156,300 steps (100 epochs of 50,000 transitions,
  batch 32).
* Online stage: one :func:`ilpo.online.run_online` run of 1,000 steps on CartPole-v1 with the
  faithful settings (a freshly initialised LPN, so evaluation episodes are short).
* Baselines' training steps (CartPole sizes, batch 32): BC, the BCO inverse-dynamics model
  and the BCO policy, each by :func:`ilpo.baselines.train_steps` in the native kernel
  (:mod:`ilpo.mlp_native`) and as PyTorch ops (one ``_ce_step`` per minibatch), and from them
  the faithful preset's BC (1,000 epochs = 1,563,000 steps) and BCO (20 iterations × 10,000
  + 10,000 steps) per seed.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ilpo.lpn import VectorLPN, lpn_losses, lrelu, make_optimizer, train_step

FAITHFUL_STEPS = 156_300  # ceil(50,000 / 32) × 100 epochs
FAITHFUL_BC_STEPS = 1_563_000  # ceil(50,000 / 32) × 1,000 epochs
FAITHFUL_BCO_STEPS = 200_000  # 20 iterations × 10,000 (IDM and policy each)


class LoopLPN(nn.Module):
    """Reference LPN that computes each latent branch in a Python loop (the slow baseline)."""

    def __init__(self, state_dim: int, n_latent: int, ngf: int = 128) -> None:
        super().__init__()
        self.n_latent = n_latent
        width = 2 * ngf
        self.enc1 = nn.Linear(state_dim, ngf)
        self.enc2 = nn.Linear(ngf, width)
        self.policy = nn.Linear(width, n_latent)
        self.embed = nn.Linear(n_latent, width)
        self.joint = nn.Linear(2 * width, width)
        self.dec1 = nn.Linear(width, ngf)
        self.dec2 = nn.Linear(ngf, state_dim)

    def forward(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """``s [B, d]`` → ``(logits [B, Z], deltas [B, Z, d])``."""
        h = lrelu(self.enc2(lrelu(self.enc1(s))))
        logits = self.policy(h)
        outs = []
        for z in range(self.n_latent):
            onehot = F.one_hot(torch.full((s.shape[0],), z), self.n_latent).float()
            u = lrelu(self.embed(onehot))
            j = self.joint(torch.cat([h, u], dim=1))
            outs.append(self.dec2(lrelu(self.dec1(lrelu(j)))))
        return logits, torch.stack(outs, dim=1)


def _loop_step(model: LoopLPN, opt: torch.optim.Optimizer, s: Tensor, s_next: Tensor) -> None:
    logits, deltas = model(s)
    target = s_next - s
    err = ((target.unsqueeze(1) - deltas) ** 2).sum(-1)
    min_loss = err.min(dim=1).values.mean()
    probs = torch.softmax(logits, dim=1)
    mix = (probs.unsqueeze(2) * deltas.detach()).sum(1)
    exp_loss = ((target - mix) ** 2).sum(-1).mean()
    opt.zero_grad()
    (min_loss + exp_loss).backward()
    opt.step()


def _time(fn: Any, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


@dataclasses.dataclass
class BenchResult:
    """Seconds per step and the derived figures."""

    lpn_step_s: float
    loop_step_s: float
    ratio: float
    faithful_lpn_s: float
    online_s: float | None
    macs_batched: int = 0
    macs_loop: int = 0
    backend: str = "torch"  # the path train_step took: "native" or "torch"
    torch_step_s: float | None = None  # the batched step as PyTorch ops (when native ran)
    # seconds per baseline step: name -> (native or None, PyTorch ops)
    baseline_steps: dict[str, tuple[float | None, float]] = dataclasses.field(default_factory=dict)

    def lines(self) -> list[str]:
        """Human-readable report."""
        out = [f"LPN step (batched latents, {self.backend}): {self.lpn_step_s * 1e3:.3f} ms"]
        if self.torch_step_s is not None:
            out.append(
                f"LPN step (batched latents, PyTorch ops): {self.torch_step_s * 1e3:.3f} ms "
                f"(ratio {self.loop_step_s / self.torch_step_s:.2f}x)"
            )
        out += [
            f"LPN step (loop over latents, reference): {self.loop_step_s * 1e3:.3f} ms",
            f"ratio: {self.ratio:.2f}x",
            f"multiply-adds per step: {self.macs_batched / 1e6:.1f}M batched, "
            f"{self.macs_loop / 1e6:.1f}M loop ({self.macs_loop / max(self.macs_batched, 1):.2f}x)",
            f"faithful LPN (156,300 steps) estimate: {self.faithful_lpn_s / 60:.1f} min",
        ]
        if self.online_s is not None:
            out.append(f"online ARN run, 1,000 steps (CartPole-v1): {self.online_s:.2f} s")
        fastest: dict[str, float] = {}
        for name, (native, ops) in self.baseline_steps.items():
            fastest[name] = ops if native is None else native
            line = f"{name} step (batch 32): PyTorch ops {ops * 1e3:.3f} ms"
            if native is not None:
                line += f", native {native * 1e3:.3f} ms (ratio {ops / native:.2f}x)"
            out.append(line)
        if len(fastest) == 3:
            bc = fastest["BC"] * FAITHFUL_BC_STEPS
            bco = (fastest["BCO IDM"] + fastest["BCO policy"]) * FAITHFUL_BCO_STEPS
            out.append(
                f"faithful baselines per seed estimate: BC {bc / 60:.1f} min, BCO "
                f"{bco / 60:.1f} min (training steps only)"
            )
        return out


def step_macs(d: int, z: int, b: int, ngf: int = 128) -> tuple[int, int]:
    """Matrix multiply-adds of one training step: (batched step, loop-over-latents reference).

    Batched: encoder, policy and ``h W_h`` once, the decoder forward on ``B·Z`` rows, the
    L_min backward on ``B`` rows (best latent only). Reference (autograd): per latent, the
    joint layer on ``[h ; u_z]`` and the decoder, forward and backward (weight and input
    gradients) on ``B`` rows each.
    """
    g, w = ngf, 2 * ngf
    enc_f = b * (d * g + g * w)
    enc_b = b * (d * g + 2 * g * w)  # weight grads of both layers, input grad of enc2
    head = b * w * z
    dec_rows = b * (w * g + g * d)  # decoder on one row per sample
    batched = (
        enc_f
        + head
        + b * w * w  # h W_h
        + z * w * w  # u W_u
        + z * dec_rows  # decoder forward on B·Z rows
        + 2 * dec_rows  # decoder backward (weights + inputs) on the B best rows
        + 2 * b * w * w  # joint: weight grad of the h half, dh
        + z * w * w  # joint: weight grad of the u half (per latent)
        + 2 * head
        + enc_b
    )
    loop = enc_f + head + 2 * head + enc_b
    loop += z * 3 * (b * 2 * w * w + dec_rows)  # joint on [h ; u_z] and decoder, fwd + bwd
    return batched, loop


def time_baselines(steps: int = 300, seed: int = 0) -> dict[str, tuple[float | None, float]]:
    """Seconds per training step of the three baseline classifiers (CartPole sizes, batch 32).

    Returns ``{name: (native or None where the kernel is unavailable, PyTorch ops)}``; the
    native side runs ``steps`` minibatches in one call, the PyTorch side ``steps // 3``.
    """
    from ilpo import mlp_native
    from ilpo.baselines import bc_policy, bco_idm, bco_policy, train_steps
    from ilpo.lpn import FlatAdam

    gen = torch.Generator().manual_seed(seed)
    out: dict[str, tuple[float | None, float]] = {}
    previous = mlp_native.SWITCH.backend
    try:
        for name, make, lr, beta1 in (
            ("BC", bc_policy, 2e-4, 0.5),
            ("BCO IDM", bco_idm, 2e-4, 0.9),
            ("BCO policy", bco_policy, 2e-3, 0.9),
        ):
            net = make(4, 2)
            opt = FlatAdam(list(net.parameters()), lr=lr, betas=(beta1, 0.999))
            x = torch.randn(4096, net.sizes[0], generator=gen)
            y = torch.randint(0, 2, (4096,), generator=gen)
            timed: list[float | None] = []
            for backend, n in (("auto", steps), ("torch", max(steps // 3, 1))):
                mlp_native.set_backend(backend)
                if backend == "auto" and not mlp_native.SWITCH.native_allowed():
                    timed.append(None)
                    continue
                idx = torch.randint(0, 4096, (32 * n,), generator=gen)
                train_steps(net, opt, x, y, idx[: 32 * 10], 32)  # warm-up
                t0 = time.perf_counter()
                train_steps(net, opt, x, y, idx, 32)
                timed.append((time.perf_counter() - t0) / n)
            assert timed[1] is not None
            out[name] = (timed[0], timed[1])
    finally:
        mlp_native.set_backend(previous)
    return out


def run_bench(
    *,
    state_dim: int = 4,
    n_latent: int = 2,
    batch_size: int = 32,
    steps: int = 300,
    warmup: int = 30,
    online: bool = True,
    baselines: bool = True,
    seed: int = 0,
) -> BenchResult:
    """Time both LPN steps (same data, same sizes) and the optional parts.

    ``online``: one online run; ``baselines``: the BC/BCO training steps
    (:func:`time_baselines`).
    """
    torch.manual_seed(seed)
    s = torch.randn(batch_size, state_dim)
    s_next = s + 0.1 * torch.randn(batch_size, state_dim)
    model = VectorLPN(state_dim, n_latent)
    opt = make_optimizer(model)
    ref = LoopLPN(state_dim, n_latent)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=2e-4, betas=(0.5, 0.999))
    from ilpo import lpn_native

    backend = "native" if lpn_native.native_step(model, s, s_next) is not None else "torch"
    # Interleave the measurements twice, so a load change hits all alike; keep the best.
    fast, slow, ops = [], [], []
    previous = lpn_native.SWITCH.backend
    try:
        for _ in range(2):
            fast.append(_time(lambda: train_step(model, opt, s, s_next), steps, warmup))
            slow.append(_time(lambda: _loop_step(ref, ref_opt, s, s_next), steps, warmup))
            if backend == "native":
                lpn_native.set_backend("torch")
                ops.append(_time(lambda: train_step(model, opt, s, s_next), steps, warmup))
                lpn_native.set_backend(previous)
    finally:
        lpn_native.set_backend(previous)
    lpn_s, loop_s = min(fast), min(slow)
    online_s = None
    if online:
        import gymnasium as gym

        from ilpo.online import OnlineSettings, run_online

        lpn = VectorLPN(4, 2)
        t0 = time.perf_counter()
        run_online(lpn, lambda: gym.make("CartPole-v1"), OnlineSettings(heldout_episodes=0), seed)
        online_s = time.perf_counter() - t0
    _ = lpn_losses  # the batched step's losses are the ones under test in tests/test_lpn.py
    macs = step_macs(state_dim, n_latent, batch_size)
    return BenchResult(
        lpn_s,
        loop_s,
        loop_s / lpn_s,
        lpn_s * FAITHFUL_STEPS,
        online_s,
        macs[0],
        macs[1],
        backend,
        min(ops) if ops else None,
        time_baselines(steps, seed) if baselines else {},
    )
