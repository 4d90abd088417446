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

**Cycles are cut** (``cut_cycles=True``, the default): the policy is Markov (it sees one
frame), greedy and deterministic, and the environment is deterministic, so an episode that
returns to a state it has already been in (same grid, agent position and direction, carried
object: :meth:`~factored_attention_babyai.env.GoToLocalEnv.state_key`) repeats the same loop
until the step limit without succeeding — a success would have ended it. Such an episode is
recorded at once as a failure of the step limit's length, exactly what stepping it to the end
records, and its slot takes the next seed. Untrained and half-trained policies spend most of
their frames in such loops (turning on the spot, ``done`` in front of the wrong object, walking
into a wall). Pass ``cut_cycles=False`` for a policy that is not a deterministic function of its
inputs; environments without ``state_key`` are never cut.
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
        frames: frames the policy was called on (the lengths' sum less the steps of the cut
            cycles; informational).
    """

    seeds: np.ndarray
    success: np.ndarray
    length: np.ndarray
    missions: tuple[str, ...]
    frames: int = 0

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
    cut_cycles: bool = True,
) -> Episodes:
    """Run one greedy episode per seed, ``batch_size`` environments at a time.

    Args:
        policy: see the module docstring.
        seeds: reset seeds, one episode each.
        batch_size: environments stepped together (the policy's batch size).
        make_env: environment factory (default :func:`factored_attention_babyai.env.make_env`).
        fast: use the policy's ``rollout_session()`` when it has one (False: call the policy
            itself on every frame).
        cut_cycles: end an episode as a step-limit failure as soon as it revisits a state
            (module docstring); the results are those of stepping it to the limit.

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
    keys = [getattr(env.unwrapped, "state_key", None) if cut_cycles else None for env in envs]
    seen: list[set[bytes]] = [set() for _ in range(slots)]
    n_frames = 0
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
        key = keys[slot]
        if key is not None:
            seen[slot] = {key()}

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
                n_frames += len(active)
                for slot, action in zip(active.tolist(), actions.tolist(), strict=True):
                    obs, reward, terminated, truncated, _ = envs[slot].step(action)
                    steps[slot] += 1
                    key = keys[slot]
                    if terminated or truncated:
                        e = episode[slot]
                        success[e] = reward > 0
                        length[e] = steps[slot]
                        start(slot)
                    elif key is not None and _revisits(seen[slot], key()):
                        e = episode[slot]  # a loop until the step limit, never a success
                        length[e] = cast("Any", envs[slot].unwrapped).max_steps
                        start(slot)
                    else:
                        images[slot] = obs["image"]
                        directions[slot] = obs["direction"]
    finally:
        for env in envs:
            env.close()
        if was_training and isinstance(policy, torch.nn.Module):
            policy.train()
    return Episodes(seeds, success, length, tuple(missions), n_frames)


def _revisits(seen: set[bytes], key: bytes) -> bool:
    """Whether ``key`` is in ``seen``; adds it when not."""
    if key in seen:
        return True
    seen.add(key)
    return False


def evaluate_goal_sets(
    policy: Policy,
    sets: dict[str, Sequence[int] | np.ndarray],
    *,
    batch_size: int = 512,
    cut_cycles: bool = True,
) -> dict[str, Episodes]:
    """Roll out every named seed set (e.g. ``{"id": ..., "ood": ...}``) in one batch stream.

    The sets are concatenated so that the environments of one set's tail share policy calls
    with the next set's head; the result is split back by name (each part's ``frames`` is
    0: the policy calls are shared).
    """
    names = list(sets)
    arrays = [np.asarray(sets[k], dtype=np.int64) for k in names]
    result = rollout(
        policy,
        np.concatenate(arrays) if arrays else [],
        batch_size=batch_size,
        cut_cycles=cut_cycles,
    )
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
