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
from ilpo.arn import ARN, Acting, choose_actions, label_image, label_vector, make_arn
from ilpo.lpn import LPN, FlatAdam, ImageLPN

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
    arn: ARN
    updates: int


def _vector_in(x: Tensor) -> Tensor:
    return x


def model_input(lpn: LPN) -> tuple[Callable[[Tensor], Tensor], np.dtype[Any]]:
    """(batch preprocessing, raw observation dtype) for an LPN's observations.

    Vector: float32 states pass unchanged. Image: uint8 frames ``[B, 128, 128, 3]`` become
    float ``[B, 3, 128, 128]`` in [−1, 1].
    """
    if isinstance(lpn, ImageLPN):
        from ilpo.data.frames import frames_to_model

        return frames_to_model, np.dtype(np.uint8)
    return _vector_in, np.dtype(np.float32)


class Agent:
    """Greedy ILPO actor: frozen LPN + ARN (batched over raw observations)."""

    def __init__(self, lpn: LPN, arn: ARN, acting: Acting) -> None:
        self.lpn = lpn
        self.arn = arn
        self.acting: Acting = acting
        self.prep, self.dtype = model_input(lpn)

    @torch.inference_mode()
    def act(self, obs: Tensor) -> Tensor:
        """Raw observations ``[B, *S]`` (float states or uint8 frames) → greedy actions ``[B]``."""
        s = self.prep(obs)
        logits, _ = self.lpn(s)
        return choose_actions(torch.softmax(logits, 1), self.arn, s, self.acting)


def run_episodes(
    make_env: Callable[[], gym.Env[Any, Any]],
    policy: Callable[[Tensor], Tensor],
    seeds: list[int],
    dtype: np.dtype[Any] | type = np.float32,
) -> list[float]:
    """Returns of one episode per seed, all envs stepped in lockstep (one batched policy call).

    ``policy`` maps observations ``[B, *S]`` (as ``dtype``) to actions ``[B]``.
    """
    envs = [make_env() for _ in seeds]
    obs = [env.reset(seed=seed)[0] for env, seed in zip(envs, seeds, strict=True)]
    returns = [0.0] * len(envs)
    live = list(range(len(envs)))
    while live:
        actions = policy(torch.from_numpy(np.stack([obs[i] for i in live]).astype(dtype)))
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


def pickle_tensor(obj: Any) -> Tensor:
    """``obj`` pickled into a uint8 tensor (loads under ``weights_only`` checkpoints)."""
    import pickle

    return torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8)


def unpickle_tensor(t: Tensor) -> Any:
    """Inverse of :func:`pickle_tensor` (only for checkpoints this package wrote)."""
    import pickle

    return pickle.loads(t.numpy().tobytes())


def run_online(
    lpn: LPN,
    make_env: Callable[[], gym.Env[Any, Any]],
    settings: OnlineSettings,
    seed: int,
    *,
    delta_std: Tensor | None = None,
    log: Callable[[int, dict[str, float]], None] | None = None,
    save: Callable[[dict[str, Any]], None] | None = None,
    resume: dict[str, Any] | None = None,
) -> OnlineResult:
    """One online ILPO run (experiment ``seed``): returns the curve and the trained ARN.

    ``lpn`` is frozen (a vector LPN labels transitions in state space, an image LPN in its
    encoder space, spec §3.1). ``delta_std [d]`` is needed for ``label_distance="scaled"``.
    ``log`` is called at each evaluation point with namespaced metrics. ``save`` receives a
    checkpoint dictionary (:func:`compkit_utils.checkpoints.make_state` layout, step = the
    next t) after every evaluation point and when Ctrl-C stops the run (each step runs with
    Ctrl-C deferred, so the state is whole); ``resume`` (such a dictionary) continues the run
    exactly where it stopped.
    """
    from compkit_utils.checkpoints import make_state, restore
    from compkit_utils.runs import defer_interrupt

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
    arn = make_arn(lpn, n_actions, int(np.prod(obs_shape)))
    opt = FlatAdam(list(arn.parameters()), lr=settings.lr, betas=(0.9, 0.999))
    agent = Agent(lpn, arn, settings.acting)
    prep, dtype = agent.prep, agent.dtype

    def raw(x: Any) -> Tensor:
        return torch.from_numpy(np.array(x, dtype=dtype)).unsqueeze(0)

    image = isinstance(lpn, ImageLPN)
    cap = min(settings.buffer_size, settings.steps)  # never more than T tuples are stored
    buf_s = torch.zeros((cap, *obs_shape), dtype=torch.from_numpy(np.zeros(0, dtype)).dtype)
    buf_a = torch.zeros(cap, dtype=torch.long)
    buf_z = torch.zeros(cap, dtype=torch.long)
    heldout_seeds = [HELDOUT_SEED_BASE + 1000 * seed + i for i in range(settings.heldout_episodes)]
    eval_env = make_env() if settings.eval_env == "separate" else env
    loop: dict[str, Any] = {
        "size": 0,
        "updates": 0,
        "last_loss": math.nan,
        "eval_count": 0,
        "curve": [],
        "heldout": [],
        "done": False,
    }
    obs, _ = env.reset(seed=seed)
    start = 0
    if resume is not None:
        start = restore(resume, arn, opt, rng)  # type: ignore[arg-type]
        saved = resume["extra"]["online"]
        n = int(saved["size"])
        buf_s[:n], buf_a[:n], buf_z[:n] = saved["buf_s"], saved["buf_a"], saved["buf_z"]
        loop = {k: saved[k] for k in loop}
        loop["curve"] = [(int(t), float(r)) for t, r in saved["curve"]]
        loop["heldout"] = [(int(t), float(m), float(sd)) for t, m, sd in saved["heldout"]]
        env.close()
        env = unpickle_tensor(saved["env"])
        obs = saved["obs"].numpy()
        if settings.eval_env == "separate":
            eval_env.close()
            eval_env = unpickle_tensor(saved["eval_env"])
        else:
            eval_env = env

    def snapshot(t_next: int) -> dict[str, Any]:
        n = min(loop["size"], cap)
        online = {
            **loop,
            "buf_s": buf_s[:n].clone(),
            "buf_a": buf_a[:n].clone(),
            "buf_z": buf_z[:n].clone(),
            "env": pickle_tensor(env),
            "eval_env": None if eval_env is env else pickle_tensor(eval_env),
            "obs": torch.from_numpy(np.array(obs)),
        }
        state = make_state(step=t_next, model=arn, optimizer=opt, generator=rng)  # type: ignore[arg-type]
        state["extra"] = {"online": online}
        return state

    def evaluate(t: int) -> None:
        rets = []
        for _ in range(settings.eval_episodes):
            if settings.eval_env == "separate":
                o, _ = eval_env.reset(
                    seed=HELDOUT_SEED_BASE // 2 + 1000 * seed + loop["eval_count"]
                )
            else:
                o, _ = eval_env.reset()
            loop["eval_count"] += 1
            total, done = 0.0, False
            while not done:
                a = int(agent.act(raw(o))[0])
                o, r, term, trunc, _ = eval_env.step(a)
                total += float(r)
                done = term or trunc
            rets.append(total)
        ret = float(np.mean(rets))
        loop["curve"].append((t, ret))
        metrics = {"eval/return": ret, "train/buffer": float(loop["size"])}
        if loop["updates"]:
            metrics["train/arn_loss"] = loop["last_loss"]
        if settings.heldout_episodes:
            h = np.asarray(run_episodes(make_env, agent.act, heldout_seeds, dtype))
            loop["heldout"].append((t, float(h.mean()), float(h.std())))
            metrics["eval/heldout_return"] = float(h.mean())
            metrics["eval/heldout_return_std"] = float(h.std())
        if log is not None:
            log(t, metrics)

    def step(t: int) -> None:
        nonlocal obs
        if loop["done"]:
            obs, _ = env.reset()
        s_raw = raw(obs)
        with torch.inference_mode():
            s = prep(s_raw)
            logits, deltas = lpn(s)
            if rng.random() < settings.epsilon:
                a = int(rng.integers(n_actions))
            else:
                a = int(choose_actions(torch.softmax(logits, 1), arn, s, settings.acting)[0])
        obs, _, term, trunc, _ = env.step(a)
        loop["done"] = term or trunc
        with torch.inference_mode():
            s_next = prep(raw(obs))
            if image:
                z = int(label_image(lpn, s, s_next, deltas)[0])  # type: ignore[arg-type]
            else:
                z = int(label_vector(s, s_next, deltas, scale)[0])
        i = loop["size"] % cap
        buf_s[i], buf_a[i], buf_z[i] = s_raw[0], a, z
        loop["size"] += 1
        n = min(loop["size"], cap)
        if n >= settings.batch_size:
            idx = torch.from_numpy(rng.choice(n, settings.batch_size, replace=False))
            loss = torch.nn.functional.cross_entropy(arn(prep(buf_s[idx]), buf_z[idx]), buf_a[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loop["updates"] += 1
            loop["last_loss"] = float(loss.detach())
        if t % settings.eval_every == 0:
            evaluate(t)
            if settings.eval_env == "train":
                loop["done"] = True  # the evaluation used the training env: start a new episode

    t = start
    try:
        while t < settings.steps:
            with defer_interrupt():
                step(t)
                t += 1
                if save is not None and (t - 1) % settings.eval_every == 0:
                    save(snapshot(t))
    except KeyboardInterrupt:
        if save is not None:
            save(snapshot(t))
        raise
    final = None
    if settings.heldout_episodes:
        h = np.asarray(run_episodes(make_env, agent.act, heldout_seeds, dtype))
        final = (float(h.mean()), float(h.std()))
        if log is not None:
            log(
                settings.steps,
                {"eval/final_heldout_return": final[0], "eval/final_heldout_return_std": final[1]},
            )
    env.close()
    if eval_env is not env:
        eval_env.close()
    return OnlineResult(loop["curve"], loop["heldout"], final, arn, loop["updates"])
