"""Recurrent PPO in the style of torch_ac (written anew): rollouts, GAE, BPTT chunks, clipping.

One update:

1. :meth:`RecurrentPPO.collect` runs ``frames_per_proc`` steps of every environment with the
   current policy (no gradients), storing observations, the *input* memory of each step, the
   masks (0 where an episode just restarted), actions, values, rewards and log-probabilities.
2. Advantages come from GAE over the rollout (masks cut at episode ends), bootstrapped with
   the value of the observation after the rollout; returns = values + advantages.
3. :meth:`RecurrentPPO.update` runs ``epochs`` passes; each pass splits the env-major
   flattened rollout into chunks of ``recurrence`` steps (every second pass shifted by half a
   chunk, dropping chunks that would cross an environment's boundary), groups
   ``batch_size / recurrence`` chunks per minibatch, replays each chunk from its stored
   memory, averages the clipped PPO loss over the chunk's steps, backpropagates through time,
   clips the gradient norm and takes an Adam step. The recomputed memories are written back
   into the rollout so later passes start chunks from fresher memories.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from rim_cells.minigrid.envs import preprocess_obs, reset_vector_env

if TYPE_CHECKING:
    import gymnasium as gym

    from rim_cells.minigrid.config import PPOConfig
    from rim_cells.minigrid.model import ActorCritic


def log_prob_entropy(
    logits: torch.Tensor, actions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of ``actions`` (B,) and entropy (B,) of the categorical ``logits`` (B, A)."""
    log_p = torch.log_softmax(logits, dim=-1)
    entropy = -(log_p.exp() * log_p).sum(dim=-1)
    return log_p.gather(1, actions.long().unsqueeze(1)).squeeze(1), entropy


def select_actions(logits: torch.Tensor, argmax: bool = False) -> torch.Tensor:
    """Sample (or take the argmax of) the categorical policy; logits (B, A) → actions (B,)."""
    if argmax:
        return logits.argmax(dim=-1)
    return torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(1)


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    masks: torch.Tensor,
    next_value: torch.Tensor,
    next_mask: torch.Tensor,
    discount: float,
    gae_lambda: float,
) -> torch.Tensor:
    """Generalised advantage estimates over a rollout.

    Args:
        rewards: (T, n) rewards per step and environment.
        values: (T, n) values of the observations.
        masks: (T, n); ``masks[t]`` is 0 where the observation of step t starts a new episode.
        next_value: (n,) value of the observation after the rollout.
        next_mask: (n,) mask of that observation.
        discount: γ.
        gae_lambda: λ.

    Returns:
        Advantages (T, n).
    """
    steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    following = torch.zeros_like(next_value)
    for t in reversed(range(steps)):
        mask_after = masks[t + 1] if t + 1 < steps else next_mask
        value_after = values[t + 1] if t + 1 < steps else next_value
        delta = rewards[t] + discount * value_after * mask_after - values[t]
        following = delta + discount * gae_lambda * following * mask_after
        advantages[t] = following
    return advantages


@dataclasses.dataclass
class Experience:
    """One rollout, flattened env-major (index = env · frames_per_proc + step); F frames."""

    obs: torch.Tensor
    """(F, 3, 7, 7) preprocessed observations."""
    memory: torch.Tensor
    """(F, memory_size) memory fed to the model at each step (before masking)."""
    mask: torch.Tensor
    """(F, 1) 0 where the step starts a new episode."""
    action: torch.Tensor
    """(F,) actions taken."""
    value: torch.Tensor
    """(F,) values at collection time."""
    log_prob: torch.Tensor
    """(F,) log-probabilities at collection time."""
    advantage: torch.Tensor
    """(F,) GAE advantages."""
    returns: torch.Tensor
    """(F,) value targets (value + advantage)."""


class RecurrentPPO:
    """PPO with a recurrent actor-critic over a gymnasium vector env.

    Args:
        model: the actor-critic.
        envs: vector env with same-step autoreset (see :mod:`rim_cells.minigrid.envs`).
        cfg: PPO hyperparameters.
        optimizer: optimizer over ``model``'s parameters.
        rng: NumPy generator for the chunk order (seeded by the caller).
        env_seed: base seed of the environments (env i gets env_seed + 10000·i).
        device: where the model lives.
    """

    def __init__(
        self,
        model: ActorCritic,
        envs: gym.vector.VectorEnv,
        cfg: PPOConfig,
        optimizer: torch.optim.Optimizer,
        rng: np.random.Generator,
        env_seed: int,
        device: torch.device | str = "cpu",
    ) -> None:
        self.model = model
        self.envs = envs
        self.cfg = cfg
        self.optimizer = optimizer
        self.rng = rng
        self.device = torch.device(device)
        self.num_envs = envs.num_envs
        self.obs = reset_vector_env(envs, env_seed)
        self.memory = model.initial_memory(self.num_envs, self.device)
        self.mask = torch.ones(self.num_envs, device=self.device)
        self.episode_return = np.zeros(self.num_envs)
        self.episode_frames = np.zeros(self.num_envs, dtype=np.int64)
        self.batch_calls = 0

    @property
    def frames_per_update(self) -> int:
        return self.num_envs * self.cfg.frames_per_proc

    def collect(self) -> tuple[Experience, dict[str, float]]:
        """Run one rollout; returns the experience and episode statistics of finished episodes."""
        steps, n, device = self.cfg.frames_per_proc, self.num_envs, self.device
        obs_buf = torch.zeros(steps, n, 3, *self.obs.shape[1:3], device=device)
        memory_buf = torch.zeros(steps, n, self.model.memory_size, device=device)
        mask_buf = torch.zeros(steps, n, device=device)
        action_buf = torch.zeros(steps, n, dtype=torch.long, device=device)
        value_buf = torch.zeros(steps, n, device=device)
        reward_buf = torch.zeros(steps, n, device=device)
        log_prob_buf = torch.zeros(steps, n, device=device)
        returns_done: list[float] = []
        frames_done: list[int] = []
        for t in range(steps):
            obs = preprocess_obs(self.obs, device)
            with torch.no_grad():
                logits, value, memory = self.model(obs, self.memory * self.mask.unsqueeze(1))
                action = select_actions(logits)
                log_prob, _ = log_prob_entropy(logits, action)
            next_obs, reward, terminated, truncated, _ = self.envs.step(action.cpu().numpy())
            done = np.logical_or(terminated, truncated)
            obs_buf[t] = obs
            memory_buf[t] = self.memory
            mask_buf[t] = self.mask
            action_buf[t] = action
            value_buf[t] = value
            reward_buf[t] = torch.as_tensor(reward, dtype=torch.float32, device=device)
            log_prob_buf[t] = log_prob
            self.obs = np.asarray(next_obs)
            self.memory = memory
            self.mask = torch.as_tensor(1.0 - done, dtype=torch.float32, device=device)
            self.episode_return += reward
            self.episode_frames += 1
            for i in np.flatnonzero(done):
                returns_done.append(float(self.episode_return[i]))
                frames_done.append(int(self.episode_frames[i]))
            self.episode_return[done] = 0.0
            self.episode_frames[done] = 0

        with torch.no_grad():
            _, next_value, _ = self.model(
                preprocess_obs(self.obs, device), self.memory * self.mask.unsqueeze(1)
            )
        advantages = gae(
            reward_buf,
            value_buf,
            mask_buf,
            next_value,
            self.mask,
            self.cfg.discount,
            self.cfg.gae_lambda,
        )

        def flat(x: torch.Tensor) -> torch.Tensor:
            return x.transpose(0, 1).reshape(steps * n, *x.shape[2:])

        exps = Experience(
            obs=flat(obs_buf),
            memory=flat(memory_buf),
            mask=flat(mask_buf).unsqueeze(1),
            action=flat(action_buf),
            value=flat(value_buf),
            log_prob=flat(log_prob_buf),
            advantage=flat(advantages),
            returns=flat(value_buf + advantages),
        )
        return exps, episode_stats(returns_done, frames_done)

    def chunk_starts(self) -> list[np.ndarray]:
        """Start indices of the BPTT chunks, grouped per minibatch, for one pass."""
        rec, steps = self.cfg.recurrence, self.cfg.frames_per_proc
        starts = self.rng.permutation(np.arange(0, self.frames_per_update, rec))
        if self.batch_calls % 2 == 1:
            starts = starts[(starts + rec) % steps != 0] + rec // 2
        self.batch_calls += 1
        per_batch = self.cfg.batch_size // rec
        return [starts[i : i + per_batch] for i in range(0, len(starts), per_batch)]

    def update(self, exps: Experience) -> dict[str, float]:
        """``epochs`` passes of minibatch updates over ``exps``; returns mean loss statistics."""
        cfg, rec = self.cfg, self.cfg.recurrence
        sums = {"entropy": 0.0, "value": 0.0, "policy_loss": 0.0, "value_loss": 0.0}
        grad_norms: list[float] = []
        count = 0
        params = [p for p in self.model.parameters() if p.requires_grad]
        for _ in range(cfg.epochs):
            for starts in self.chunk_starts():
                first = torch.as_tensor(starts, dtype=torch.long, device=self.device)
                # (rec, chunks) frame indices; the image encoder does not depend on the
                # memory, so it runs once over every frame of the minibatch.
                idx = first.unsqueeze(0) + torch.arange(rec, device=self.device).unsqueeze(1)
                flat_idx = idx.reshape(-1)
                features = self.model.encode(exps.obs[flat_idx]).reshape(*idx.shape, -1)
                memory = exps.memory[first]
                hidden = []
                for i in range(rec):
                    h, memory = self.model.memory_step(features[i], memory * exps.mask[idx[i]])
                    hidden.append(h)
                    if i < rec - 1:
                        exps.memory[idx[i + 1]] = memory.detach()
                # Every step has the same number of chunks, so the mean over all frames equals
                # the original's average over steps of per-step means.
                logits, value = self.model.heads(torch.cat(hidden))
                log_prob, entropy = log_prob_entropy(logits, exps.action[flat_idx])
                entropy = entropy.mean()
                ratio = torch.exp(log_prob - exps.log_prob[flat_idx])
                adv = exps.advantage[flat_idx]
                clipped_ratio = torch.clamp(ratio, 1.0 - cfg.clip_eps, 1.0 + cfg.clip_eps)
                policy_loss = -torch.min(ratio * adv, clipped_ratio * adv).mean()
                old_value, target = exps.value[flat_idx], exps.returns[flat_idx]
                value_clipped = old_value + torch.clamp(
                    value - old_value, -cfg.clip_eps, cfg.clip_eps
                )
                value_loss = torch.max(
                    (value - target).pow(2), (value_clipped - target).pow(2)
                ).mean()
                loss = policy_loss - cfg.entropy_coef * entropy + cfg.value_loss_coef * value_loss
                stats = {
                    "entropy": entropy.item(),
                    "value": value.mean().item(),
                    "policy_loss": policy_loss.item(),
                    "value_loss": value_loss.item(),
                }
                self.optimizer.zero_grad()
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                self.optimizer.step()
                for key in sums:
                    sums[key] += stats[key]
                grad_norms.append(float(grad_norm))
                count += 1
        out = {f"train/{key}": value / max(count, 1) for key, value in sums.items()}
        out["train/grad_norm"] = float(np.mean(grad_norms)) if grad_norms else 0.0
        return out

    def state_dict(self) -> dict[str, Any]:
        """Counters that make a resumed run continue the chunk-offset alternation."""
        return {"batch_calls": self.batch_calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batch_calls = int(state.get("batch_calls", 0))


def episode_stats(returns: list[float], frames: list[int]) -> dict[str, float]:
    """Mean/std/min/max of episode returns and frames; empty dict when no episode finished."""
    if not returns:
        return {}
    r, f = np.asarray(returns), np.asarray(frames, dtype=np.float64)
    return {
        "return_mean": float(r.mean()),
        "return_std": float(r.std()),
        "return_min": float(r.min()),
        "return_max": float(r.max()),
        "frames_mean": float(f.mean()),
        "frames_min": float(f.min()),
        "frames_max": float(f.max()),
        "episodes": float(len(r)),
    }
