"""Baselines as the original ran them: BC with true actions and BCO(α); random policy return.

Notation: N demonstration transitions, B batch, d state dimension, A real actions.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compkit_utils.seeding import seed_everything
from ilpo.lpn import FlatAdam, _glorot_linear, lrelu
from ilpo.online import HELDOUT_SEED_BASE, random_policy_return, run_episodes

__all__ = [
    "MLP",
    "BCOResult",
    "BCOSettings",
    "bc_policy",
    "bco_idm",
    "bco_policy",
    "evaluate_greedy",
    "random_policy_return",
    "run_bco",
    "train_bc",
    "train_steps",
]


class MLP(nn.Module):
    """Linear layers with LReLU between them (Glorot weights, zero biases); logits out."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.sizes = list(sizes)
        self.layers = nn.ModuleList(_glorot_linear(a, b) for a, b in itertools.pairwise(sizes))

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, sizes[0]]`` → ``[B, sizes[-1]]``."""
        for i, layer in enumerate(self.layers):
            x = layer(x if i == 0 else lrelu(x))
        return x


def bc_policy(state_dim: int, n_actions: int) -> MLP:
    """BC net: d → 128 → LReLU → 256 → LReLU → A."""
    return MLP([state_dim, 128, 256, n_actions])


def bco_idm(state_dim: int, n_actions: int) -> MLP:
    """BCO inverse-dynamics model on [s ; s']: 2d → 128 → LReLU → 256 → LReLU → A."""
    return MLP([2 * state_dim, 128, 256, n_actions])


def bco_policy(state_dim: int, n_actions: int) -> MLP:
    """BCO policy: d → 128 → 256 → 64 → 32 → A (LReLU between)."""
    return MLP([state_dim, 128, 256, 64, 32, n_actions])


def _ce_step(model: nn.Module, opt: FlatAdam, x: Tensor, y: Tensor) -> Tensor:
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def train_steps(
    model: nn.Module, opt: FlatAdam, x: Tensor, y: Tensor, idx: Tensor, batch_size: int
) -> Tensor:
    """Adam steps of mean cross-entropy on the minibatches ``idx[i : i + batch_size]``.

    ``x [N, n0]``, ``y [N]`` (class ids), ``idx [M]`` row indices (the last minibatch may be
    shorter). Returns the per-step losses ``[ceil(M / batch_size)]``. Runs in the native
    kernel (:mod:`ilpo.mlp_native`) when it applies, else as PyTorch steps.
    """
    from ilpo.mlp_native import native_train

    losses = native_train(model, opt, x, y, idx, batch_size)
    if losses is not None:
        return losses
    out = torch.empty(math.ceil(len(idx) / batch_size))
    for step, i in enumerate(range(0, len(idx), batch_size)):
        rows = idx[i : i + batch_size]
        out[step] = _ce_step(model, opt, x[rows], y[rows])
    return out


def train_bc(
    states: Tensor,
    actions: Tensor,
    n_actions: int,
    *,
    epochs: int = 1000,
    batch_size: int = 32,
    lr: float = 2e-4,
    beta1: float = 0.5,
    seed: int = 0,
    log: Callable[[int, dict[str, float]], None] | None = None,
    save: Callable[[dict[str, Any]], None] | None = None,
    resume: dict[str, Any] | None = None,
) -> MLP:
    """Behavioural cloning on ``states [N, d]`` with true ``actions [N]`` (original settings).

    Shuffled minibatches, ceil(N / batch) Adam steps per epoch; ``log(epoch, metrics)`` after
    each epoch. ``save`` receives a checkpoint dictionary (step = epochs done) after every
    epoch; each epoch runs with Ctrl-C deferred, so an interrupted run stops right after one.
    ``resume`` (such a dictionary) continues exactly where it stopped.
    """
    from compkit_utils.checkpoints import make_state, restore
    from compkit_utils.runs import defer_interrupt

    seed_everything(seed)
    net = bc_policy(states.shape[1], n_actions)
    optim = FlatAdam(list(net.parameters()), lr=lr, betas=(beta1, 0.999))
    gen = torch.Generator().manual_seed(seed)
    start = 0
    if resume is not None:
        start = restore(resume, net, optim)  # type: ignore[arg-type]
        gen.set_state(resume["extra"]["generator"])
    n = len(states)
    for epoch in range(start, epochs):
        with defer_interrupt():
            perm = torch.randperm(n, generator=gen)
            losses = train_steps(net, optim, states, actions, perm, batch_size)
            if log is not None:
                log(epoch + 1, {"train/bc_loss": float(losses.mean())})
            if save is not None:
                state = make_state(step=epoch + 1, model=net, optimizer=optim)  # type: ignore[arg-type]
                state["extra"] = {"generator": gen.get_state()}
                save(state)
    return net


def evaluate_greedy(
    make_env: Callable[[], gym.Env[Any, Any]], model: nn.Module, episodes: int, seed: int
) -> tuple[float, float]:
    """Mean and std return of ``argmax model(s)`` over ``episodes`` held-out seeds."""

    @torch.inference_mode()
    def policy(s: Tensor) -> Tensor:
        return model(s).argmax(1)

    seeds = [HELDOUT_SEED_BASE + 1000 * seed + i for i in range(episodes)]
    r = np.asarray(run_episodes(make_env, policy, seeds))
    return float(r.mean()), float(r.std())


@dataclasses.dataclass(frozen=True)
class BCOSettings:
    """BCO(α) as the ILPO repository ran it (defaults = the original's)."""

    steps: int = 1000  # interaction budget
    steps_per_iter: int = 50  # collected per iteration (= evaluation grid)
    idm_steps: int = 10_000  # Adam steps on the IDM per iteration
    idm_lr: float = 2e-4
    policy_steps: int = 10_000  # Adam steps on the policy per iteration
    policy_lr: float = 2e-3
    batch_size: int = 32
    eval_episodes: int = 1  # faithful: one greedy episode per point, on the training env
    heldout_episodes: int = 10  # extra protocol: episodes per point on held-out seeds (0: off)


@dataclasses.dataclass
class BCOResult:
    """Curve and final models of one BCO run."""

    curve: list[tuple[int, float]]
    heldout: list[tuple[int, float, float]]
    final_heldout: tuple[float, float] | None
    policy: MLP
    idm: MLP


def run_bco(
    states: Tensor,
    next_states: Tensor,
    make_env: Callable[[], gym.Env[Any, Any]],
    settings: BCOSettings,
    seed: int,
    *,
    log: Callable[[int, dict[str, float]], None] | None = None,
    save: Callable[[dict[str, Any]], None] | None = None,
    resume: dict[str, Any] | None = None,
) -> BCOResult:
    """BCO(α) on state-only demonstrations ``states, next_states [N, d]``.

    Per iteration i = 0, 50, …: evaluate the greedy policy, collect 50 steps (random actions in
    the first iteration, greedy policy afterwards), train the IDM on all collected tuples, label
    all demonstration pairs with argmax IDM, train the policy on them. Nets are not
    re-initialised between iterations. ``save`` receives a checkpoint dictionary after every
    iteration (each runs with Ctrl-C deferred); ``resume`` continues from one exactly.
    """
    from compkit_utils.checkpoints import make_state, restore
    from compkit_utils.runs import defer_interrupt
    from ilpo.online import pickle_tensor, unpickle_tensor

    rng = seed_everything(seed)
    env = make_env()
    space = env.action_space
    if not isinstance(space, gym.spaces.Discrete):
        raise ValueError("BCO needs a discrete action space")
    n_actions = int(space.n)
    space.seed(seed)
    d = states.shape[1]
    idm, policy = bco_idm(d, n_actions), bco_policy(d, n_actions)
    idm_opt = FlatAdam(list(idm.parameters()), lr=settings.idm_lr, betas=(0.9, 0.999))
    pol_opt = FlatAdam(list(policy.parameters()), lr=settings.policy_lr, betas=(0.9, 0.999))
    pairs = torch.cat([states, next_states], dim=1)
    col_s: list[np.ndarray] = []
    col_a: list[int] = []
    col_n: list[np.ndarray] = []
    curve: list[tuple[int, float]] = []
    heldout: list[tuple[int, float, float]] = []
    hseeds = [HELDOUT_SEED_BASE + 1000 * seed + i for i in range(settings.heldout_episodes)]

    @torch.inference_mode()
    def greedy(s: Tensor) -> Tensor:
        return policy(s).argmax(1)

    def batches(n: int, steps: int) -> Tensor:
        """``steps`` minibatches of ``batch_size`` row indices below ``n``, concatenated.

        Each is one ``rng.choice`` draw, without replacement when ``n`` allows.
        """
        k = settings.batch_size
        draws = [rng.choice(n, k, replace=n < k) for _ in range(steps)]
        return (
            torch.from_numpy(np.concatenate(draws)) if draws else torch.zeros(0, dtype=torch.int64)
        )

    obs, _ = env.reset(seed=seed)
    done = False
    it = 0
    if resume is not None:
        it = restore(resume, policy, pol_opt, rng)  # type: ignore[arg-type]
        saved = resume["extra"]
        idm.load_state_dict(saved["idm"])
        idm_opt.load_state_dict(saved["idm_optimizer"])
        col_s = list(saved["col_s"].numpy())
        col_n = list(saved["col_n"].numpy())
        col_a = [int(a) for a in saved["col_a"]]
        curve = [(int(t), float(r)) for t, r in saved["curve"]]
        heldout = [(int(t), float(m), float(sd)) for t, m, sd in saved["heldout"]]
        env.close()
        env = unpickle_tensor(saved["env"])
        obs, done = saved["obs"].numpy(), bool(saved["done"])

    def snapshot() -> dict[str, Any]:
        state = make_state(step=it, model=policy, optimizer=pol_opt, generator=rng)  # type: ignore[arg-type]
        state["extra"] = {
            "idm": idm.state_dict(),
            "idm_optimizer": idm_opt.state_dict(),
            "col_s": torch.from_numpy(np.stack(col_s)),
            "col_n": torch.from_numpy(np.stack(col_n)),
            "col_a": torch.tensor(col_a),
            "curve": curve,
            "heldout": heldout,
            "env": pickle_tensor(env),
            "obs": torch.from_numpy(np.array(obs)),
            "done": done,
        }
        return state

    def iteration() -> None:
        nonlocal obs, done
        t = len(col_a)
        rets = []
        for _ in range(settings.eval_episodes):
            o, _ = env.reset()
            total, end = 0.0, False
            while not end:
                o, r, term, trunc, _ = env.step(int(greedy(torch.as_tensor(o[None]))[0]))
                total += float(r)
                end = term or trunc
            rets.append(total)
        done = True  # the evaluation used the training env: start a new episode
        metrics = {"eval/return": float(np.mean(rets))}
        curve.append((t, metrics["eval/return"]))
        if hseeds:
            h = np.asarray(run_episodes(make_env, greedy, hseeds))
            heldout.append((t, float(h.mean()), float(h.std())))
            metrics["eval/heldout_return"] = float(h.mean())
            metrics["eval/heldout_return_std"] = float(h.std())
        for _ in range(min(settings.steps_per_iter, settings.steps - t)):
            if done:
                obs, _ = env.reset()
            if it == 0:
                a = int(rng.integers(n_actions))
            else:
                a = int(greedy(torch.as_tensor(np.asarray(obs, dtype=np.float32)[None]))[0])
            nxt, _, term, trunc, _ = env.step(a)
            col_s.append(np.asarray(obs, dtype=np.float32))
            col_a.append(a)
            col_n.append(np.asarray(nxt, dtype=np.float32))
            obs, done = nxt, term or trunc
        cs = torch.from_numpy(np.stack(col_s))
        cn = torch.from_numpy(np.stack(col_n))
        ca = torch.tensor(col_a)
        x_idm = torch.cat([cs, cn], dim=1)
        idx = batches(len(ca), settings.idm_steps)
        idm_losses = train_steps(idm, idm_opt, x_idm, ca, idx, settings.batch_size)
        with torch.inference_mode():
            labels = idm(pairs).argmax(1)
        idx = batches(len(labels), settings.policy_steps)
        pol_losses = train_steps(policy, pol_opt, states, labels, idx, settings.batch_size)
        metrics["train/idm_loss"] = float(idm_losses[-1]) if len(idm_losses) else 0.0
        metrics["train/policy_loss"] = float(pol_losses[-1]) if len(pol_losses) else 0.0
        metrics["train/collected"] = float(len(col_a))
        if log is not None:
            log(t, metrics)

    while len(col_a) < settings.steps:
        with defer_interrupt():
            iteration()
            it += 1
            if save is not None:
                save(snapshot())
    final = None
    if hseeds:
        h = np.asarray(run_episodes(make_env, greedy, hseeds))
        final = (float(h.mean()), float(h.std()))
        if log is not None:
            log(
                settings.steps,
                {"eval/final_heldout_return": final[0], "eval/final_heldout_return_std": final[1]},
            )
    env.close()
    return BCOResult(curve, heldout, final, policy, idm)
