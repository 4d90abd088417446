"""The online stage: train the ARN from a small number of environment interactions.

Faithful loop (vector domains): T = 1,000 steps, ε = 0.2 constant exploration, ARN batch 32,
Adam lr 2e-3, one ARN step per env step once 32 tuples are stored, one greedy evaluation episode
every 50 steps on the training env (not counted, not stored), after which the training episode is
reset. Each behaviour of the original is a named option of :class:`OnlineSettings`; the defaults
are the original's choices. A better protocol runs beside the faithful one: ``heldout_episodes``
greedy episodes per point on a separate env with held-out seeds (reported in the metrics, not in
the CSV).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from compkit_utils.io import atomic_write_text
from compkit_utils.seeding import seed_everything
from ilpo.arn import Acting, VectorARN, choose_actions, label_vector
from ilpo.lpn import FlatAdam, VectorLPN

EvalEnv = Literal["train", "separate"]
LabelDistance = Literal["raw", "scaled"]
HELDOUT_SEED_BASE = 1_000_000


@dataclasses.dataclass(frozen=True)
class OnlineSettings:
    """Settings of one online run; the defaults are the original's (§3.4, §7 of the spec)."""

    steps: int = 1000  # T, counted environment interactions
    epsilon: float = 0.2  # constant ε-greedy exploration
    batch_size: int = 32  # ARN minibatch (updates start once this many tuples are stored)
    lr: float = 2e-3  # ARN Adam learning rate
    buffer_size: int = 50_000  # replay capacity (never reached at T = 1,000)
    eval_every: int = 50  # evaluation grid (t = 0, 50, ...)
    eval_episodes: int = 1  # faithful: one greedy episode per point
    eval_env: EvalEnv = "train"  # faithful: on the training env object, then reset it
    acting: Acting = "greedy-greedy"  # or "marginal": argmax Σ_z π_ξ(a|s,z) π_ω(z|s)
    label_distance: LabelDistance = "raw"  # raw state units (original) or divided by Δ's std
    heldout_episodes: int = 10  # extra protocol: episodes per point on held-out seeds (0: off)


@dataclasses.dataclass
class OnlineResult:
    """What one online run produced."""

    curve: list[tuple[int, float]]  # faithful (t, return) points, as written to <k>.csv
    heldout: list[tuple[int, float, float]]  # (t, mean, std) on held-out seeds
    final_heldout: tuple[float, float] | None  # after all T steps: (mean, std)
    arn: VectorARN
    updates: int


def _obs(x: Any) -> Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32)).unsqueeze(0)


class Agent:
    """Greedy ILPO actor: frozen LPN + ARN (batched over states)."""

    def __init__(self, lpn: VectorLPN, arn: VectorARN, acting: Acting) -> None:
        self.lpn = lpn
        self.arn = arn
        self.acting: Acting = acting

    @torch.inference_mode()
    def act(self, s: Tensor) -> Tensor:
        """``s [B, d]`` → greedy actions ``[B]``."""
        logits, _ = self.lpn(s)
        return choose_actions(torch.softmax(logits, 1), self.arn, s, self.acting)


def run_episodes(
    make_env: Callable[[], gym.Env[Any, Any]],
    policy: Callable[[Tensor], Tensor],
    seeds: list[int],
) -> list[float]:
    """Returns of one episode per seed, all envs stepped in lockstep (one batched policy call).

    ``policy`` maps states ``[B, d]`` to actions ``[B]``.
    """
    envs = [make_env() for _ in seeds]
    obs = [env.reset(seed=seed)[0] for env, seed in zip(envs, seeds, strict=True)]
    returns = [0.0] * len(envs)
    live = list(range(len(envs)))
    while live:
        actions = policy(torch.as_tensor(np.stack([obs[i] for i in live]), dtype=torch.float32))
        still = []
        for i, a in zip(live, actions.tolist(), strict=True):
            obs[i], reward, terminated, truncated, _ = envs[i].step(int(a))
            returns[i] += float(reward)
            if not (terminated or truncated):
                still.append(i)
        live = still
    for env in envs:
        env.close()
    return returns


def random_policy_return(
    make_env: Callable[[], gym.Env[Any, Any]], n_actions: int, episodes: int, seed: int
) -> tuple[float, float]:
    """Mean and std of the uniform-random policy's return over ``episodes`` held-out seeds."""
    gen = torch.Generator().manual_seed(seed)

    def policy(s: Tensor) -> Tensor:
        return torch.randint(0, n_actions, (s.shape[0],), generator=gen)

    seeds = [HELDOUT_SEED_BASE + 1000 * seed + i for i in range(episodes)]
    r = np.asarray(run_episodes(make_env, policy, seeds))
    return float(r.mean()), float(r.std())


def write_curve_csv(path: Path, curve: list[tuple[int, float]]) -> Path:
    """Write ``t,return`` lines (no header), the original's ``<k>.csv`` format."""
    return atomic_write_text(path, "".join(f"{t},{float(r)!r}\n" for t, r in curve))


def read_curve_csv(path: Path) -> list[tuple[int, float]]:
    """Read a ``<k>.csv`` curve (``t,return`` lines)."""
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            t, r = line.split(",")
            out.append((int(t), float(r)))
    return out


def run_online(
    lpn: VectorLPN,
    make_env: Callable[[], gym.Env[Any, Any]],
    settings: OnlineSettings,
    seed: int,
    *,
    delta_std: Tensor | None = None,
    log: Callable[[int, dict[str, float]], None] | None = None,
) -> OnlineResult:
    """One online ILPO run (experiment ``seed``): returns the curve and the trained ARN.

    ``lpn`` is frozen. ``delta_std [d]`` is needed for ``label_distance="scaled"``. ``log`` is
    called at each evaluation point with namespaced metrics.
    """
    scale = None
    if settings.label_distance == "scaled":
        if delta_std is None:
            raise ValueError("label_distance='scaled' needs delta_std")
        scale = delta_std.clamp_min(1e-8)
    rng = seed_everything(seed)
    lpn.eval()
    for p in lpn.parameters():
        p.requires_grad_(False)
    env = make_env()
    space = env.action_space
    if not isinstance(space, gym.spaces.Discrete):
        raise ValueError("the online stage needs a discrete action space")
    n_actions = int(space.n)
    space.seed(seed)
    obs_shape = env.observation_space.shape
    assert obs_shape is not None
    state_dim = int(np.prod(obs_shape))
    arn = VectorARN(state_dim, lpn.n_latent, n_actions, ngf=lpn.ngf)
    opt = FlatAdam(list(arn.parameters()), lr=settings.lr, betas=(0.9, 0.999))
    agent = Agent(lpn, arn, settings.acting)
    cap = settings.buffer_size
    buf_s = torch.zeros(cap, state_dim)
    buf_a = torch.zeros(cap, dtype=torch.long)
    buf_z = torch.zeros(cap, dtype=torch.long)
    size = 0
    updates = 0
    last_loss = math.nan
    curve: list[tuple[int, float]] = []
    heldout: list[tuple[int, float, float]] = []
    heldout_seeds = [HELDOUT_SEED_BASE + 1000 * seed + i for i in range(settings.heldout_episodes)]
    eval_env = make_env() if settings.eval_env == "separate" else env
    eval_count = 0

    def evaluate(t: int) -> None:
        nonlocal eval_count
        rets = []
        for _ in range(settings.eval_episodes):
            if settings.eval_env == "separate":
                o, _ = eval_env.reset(seed=HELDOUT_SEED_BASE // 2 + 1000 * seed + eval_count)
            else:
                o, _ = eval_env.reset()
            eval_count += 1
            total, done = 0.0, False
            while not done:
                a = int(agent.act(_obs(o))[0])
                o, r, term, trunc, _ = eval_env.step(a)
                total += float(r)
                done = term or trunc
            rets.append(total)
        ret = float(np.mean(rets))
        curve.append((t, ret))
        metrics = {"eval/return": ret, "train/buffer": float(size)}
        if updates:
            metrics["train/arn_loss"] = last_loss
        if settings.heldout_episodes:
            h = np.asarray(run_episodes(make_env, agent.act, heldout_seeds))
            heldout.append((t, float(h.mean()), float(h.std())))
            metrics["eval/heldout_return"] = float(h.mean())
            metrics["eval/heldout_return_std"] = float(h.std())
        if log is not None:
            log(t, metrics)

    obs, _ = env.reset(seed=seed)
    done = False
    for t in range(settings.steps):
        if done:
            obs, _ = env.reset()
        s = _obs(obs)
        with torch.inference_mode():
            logits, deltas = lpn(s)
            if rng.random() < settings.epsilon:
                a = int(rng.integers(n_actions))
            else:
                a = int(choose_actions(torch.softmax(logits, 1), arn, s, settings.acting)[0])
        obs, _, term, trunc, _ = env.step(a)
        done = term or trunc
        with torch.inference_mode():
            z = int(label_vector(s, _obs(obs), deltas, scale)[0])
        i = size % cap
        buf_s[i] = s[0]
        buf_a[i] = a
        buf_z[i] = z
        size += 1
        n = min(size, cap)
        if n >= settings.batch_size:
            idx = torch.from_numpy(rng.choice(n, settings.batch_size, replace=False))
            loss = torch.nn.functional.cross_entropy(arn(buf_s[idx], buf_z[idx]), buf_a[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            updates += 1
            last_loss = float(loss.detach())
        if t % settings.eval_every == 0:
            evaluate(t)
            if settings.eval_env == "train":
                done = True  # the evaluation used the training env: start a new episode
    final = None
    if settings.heldout_episodes:
        h = np.asarray(run_episodes(make_env, agent.act, heldout_seeds))
        final = (float(h.mean()), float(h.std()))
        if log is not None:
            log(
                settings.steps,
                {"eval/final_heldout_return": final[0], "eval/final_heldout_return_std": final[1]},
            )
    env.close()
    if eval_env is not env:
        eval_env.close()
    return OnlineResult(curve, heldout, final, arn, updates)
