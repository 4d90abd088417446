"""Vectorised rollout evaluation of a policy on GoToLocal (spec §5.5).

Many environments are stepped together and the policy is called once per time step on the
frames of every running episode (greedy actions, history window 1). Each episode starts from a
given reset seed (the stored seed of a validation demo, so the same layout and mission as the
held-out demo) and ends on success (``done`` while facing a matching object, reward > 0) or at
the 64-step limit. When an episode ends its slot takes the next seed, so the batch stays full.

* :func:`rollout` — episodes of a list of seeds → :class:`Episodes` (per-episode success and
  length, in seed order).
* :func:`evaluate_goal_sets` — the ID and OOD sets of §5.5 in one call.
* :func:`fresh_goal_seeds` — seeds whose mission is in a goal set, ``per_goal`` each, for
  evaluating on layouts no demo used (scanning upward from a start seed).

A policy is any callable ``(images [N, 8, 8, 3] uint8, directions [N] int64, missions [N, 5]
int64) -> scores [N, 7]`` (logits or log-probabilities); it is put in eval mode and called
under ``torch.inference_mode``. A policy with a ``rollout_session()`` method (the BC baselines,
:mod:`factored_attention_babyai.models.inference`) is driven through that session instead
(``fast=True``, the default): its episode code is computed once when an episode starts (the
mission encoding is constant within an episode) and each time step passes only the frames —
the same scores up to float rounding, less work per frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from factored_attention_babyai.models.inference import RolloutSession

__all__ = ["Episodes", "Policy", "evaluate_goal_sets", "fresh_goal_seeds", "rollout"]

Policy = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclasses.dataclass(frozen=True)
class Episodes:
    """Per-episode results, in the order of the seeds given.

    Attributes:
        seeds: ``[E]`` reset seeds.
        success: ``[E]`` bool, the episode ended with reward > 0.
        length: ``[E]`` actions taken (≤ 64).
        missions: the mission string of each episode.
    """

    seeds: np.ndarray
    success: np.ndarray
    length: np.ndarray
    missions: tuple[str, ...]

    @property
    def success_rate(self) -> float:
        """Mean success (0.0 for no episodes)."""
        return float(self.success.mean()) if len(self.success) else 0.0

    def per_goal(self) -> dict[str, float]:
        """Success rate of each mission string present."""
        out: dict[str, list[bool]] = {}
        for mission, ok in zip(self.missions, self.success, strict=True):
            out.setdefault(mission, []).append(bool(ok))
        return {m: float(np.mean(v)) for m, v in sorted(out.items())}


def _policy_device(policy: Any) -> torch.device:
    if isinstance(policy, torch.nn.Module):
        for p in policy.parameters():
            return p.device
    return torch.device("cpu")


def rollout(
    policy: Policy,
    seeds: Sequence[int] | np.ndarray,
    *,
    batch_size: int = 512,
    make_env: Callable[[], Any] | None = None,
    fast: bool = True,
) -> Episodes:
    """Run one greedy episode per seed, ``batch_size`` environments at a time.

    Args:
        policy: see the module docstring.
        seeds: reset seeds, one episode each.
        batch_size: environments stepped together (the policy's batch size).
        make_env: environment factory (default :func:`factored_attention_babyai.env.make_env`).
        fast: use the policy's ``rollout_session()`` when it has one (False: call the policy
            itself on every frame).

    Returns:
        The :class:`Episodes` of ``seeds``, in order.
    """
    if make_env is None:
        from factored_attention_babyai.env import make_env as default_make_env

        make_env = default_make_env
    seeds = np.asarray(seeds, dtype=np.int64)
    n = len(seeds)
    success = np.zeros(n, dtype=bool)
    length = np.zeros(n, dtype=np.int64)
    missions: list[str] = [""] * n
    slots = min(batch_size, n)
    if slots == 0:
        return Episodes(seeds, success, length, ())
    envs = [make_env() for _ in range(slots)]
    images = np.zeros((slots, 8, 8, 3), dtype=np.uint8)
    directions = np.zeros(slots, dtype=np.int64)
    tokens = np.zeros((slots, 5), dtype=np.int64)
    episode = np.full(slots, -1, dtype=np.int64)
    steps = np.zeros(slots, dtype=np.int64)
    device = _policy_device(policy)
    was_training = isinstance(policy, torch.nn.Module) and policy.training
    if isinstance(policy, torch.nn.Module):
        policy.eval()
    make_session = getattr(policy, "rollout_session", None) if fast else None
    fresh = np.zeros(slots, dtype=bool)  # slots whose episode code is still to compute
    next_episode = 0

    def start(slot: int) -> None:
        nonlocal next_episode
        if next_episode >= n:
            episode[slot] = -1
            return
        obs, _ = envs[slot].reset(seed=int(seeds[next_episode]))
        images[slot] = obs["image"]
        directions[slot] = obs["direction"]
        tokens[slot] = obs["mission_tokens"]
        missions[next_episode] = obs["mission"]
        episode[slot] = next_episode
        steps[slot] = 0
        fresh[slot] = True
        next_episode += 1

    try:
        for slot in range(slots):
            start(slot)
        with torch.inference_mode():
            session = cast("RolloutSession", make_session()) if callable(make_session) else None
            codes = torch.zeros(0)  # [slots, K] episode codes of the session, once known
            while True:
                active = np.flatnonzero(episode >= 0)
                if len(active) == 0:
                    break
                frames = (
                    torch.from_numpy(images[active]).to(device),
                    torch.from_numpy(directions[active]).to(device),
                )
                if session is None:
                    scores = policy(*frames, torch.from_numpy(tokens[active]).to(device))
                else:
                    new = np.flatnonzero(fresh & (episode >= 0))
                    if len(new):
                        code = session.encode(torch.from_numpy(tokens[new]).to(device))
                        if codes.ndim == 1:
                            codes = code.new_zeros(slots, code.shape[1])
                        codes[torch.from_numpy(new).to(device)] = code
                        fresh[new] = False
                    index = torch.from_numpy(active).to(device)
                    scores = session(*frames, codes if len(active) == slots else codes[index])
                actions = scores.argmax(dim=-1).cpu().numpy()
                for slot, action in zip(active.tolist(), actions.tolist(), strict=True):
                    obs, reward, terminated, truncated, _ = envs[slot].step(action)
                    steps[slot] += 1
                    if terminated or truncated:
                        e = episode[slot]
                        success[e] = reward > 0
                        length[e] = steps[slot]
                        start(slot)
                    else:
                        images[slot] = obs["image"]
                        directions[slot] = obs["direction"]
    finally:
        for env in envs:
            env.close()
        if was_training and isinstance(policy, torch.nn.Module):
            policy.train()
    return Episodes(seeds, success, length, tuple(missions))


def evaluate_goal_sets(
    policy: Policy,
    sets: dict[str, Sequence[int] | np.ndarray],
    *,
    batch_size: int = 512,
) -> dict[str, Episodes]:
    """Roll out every named seed set (e.g. ``{"id": ..., "ood": ...}``) in one batch stream.

    The sets are concatenated so that the environments of one set's tail share policy calls
    with the next set's head; the result is split back by name.
    """
    names = list(sets)
    arrays = [np.asarray(sets[k], dtype=np.int64) for k in names]
    result = rollout(policy, np.concatenate(arrays) if arrays else [], batch_size=batch_size)
    out: dict[str, Episodes] = {}
    start = 0
    for name, arr in zip(names, arrays, strict=True):
        stop = start + len(arr)
        out[name] = Episodes(
            result.seeds[start:stop],
            result.success[start:stop],
            result.length[start:stop],
            result.missions[start:stop],
        )
        start = stop
    return out


def fresh_goal_seeds(goals: Iterable[str], per_goal: int, start: int = 10**9) -> list[int]:
    """The first ``per_goal`` seeds ≥ ``start`` of each goal in ``goals`` (goal-balanced).

    Reads only each seed's mission (layout generation, no bot), so it is fast. The default
    start lies far above the seeds a generated dataset uses. Unlike stored demos, these
    layouts are not filtered by the bot's path length.

    Returns:
        Seeds ordered goal by goal, in the order of ``goals``.
    """
    from factored_attention_babyai.env import make_env

    wanted = list(dict.fromkeys(goals))
    found: dict[str, list[int]] = {g: [] for g in wanted}
    env = make_env()
    seed = start
    try:
        while any(len(v) < per_goal for v in found.values()):
            mission = env.reset_layout(seed=seed)
            bucket = found.get(mission)
            if bucket is not None and len(bucket) < per_goal:
                bucket.append(seed)
            seed += 1
    finally:
        env.close()
    return [s for g in wanted for s in found[g]]
