"""The vectorised rollout evaluator (spec §5.5)."""

from __future__ import annotations

import numpy as np
import torch

from factored_attention_babyai.bc_data import bot_demo
from factored_attention_babyai.bench import reference_rollout
from factored_attention_babyai.env import make_env
from factored_attention_babyai.evaluate import evaluate_goal_sets, fresh_goal_seeds, rollout
from factored_attention_babyai.models.film import FilmPolicy
from factored_attention_babyai.vocab import ID_GOALS, OOD_GOALS

SEEDS = [3, 11, 17, 29, 41]


class LookupPolicy:
    """Replays the bot: maps (frame, direction, mission) of its demos to its action."""

    def __init__(self, seeds: list[int]) -> None:
        self.table: dict[bytes, int] = {}
        self.lengths: list[int] = []
        env = make_env()
        for seed in seeds:
            images, directions, actions, tokens = bot_demo(env, seed)
            self.lengths.append(len(actions))
            for im, d, a in zip(images, directions, actions, strict=True):
                self.table[self._key(im, int(d), tokens)] = int(a)

    @staticmethod
    def _key(image: np.ndarray, direction: int, tokens: np.ndarray) -> bytes:
        return image.tobytes() + bytes([direction]) + tokens.astype(np.int64).tobytes()

    def __call__(self, images: torch.Tensor, directions: torch.Tensor, missions: torch.Tensor):
        out = torch.zeros(len(images), 7)
        for i in range(len(images)):
            key = self._key(images[i].numpy(), int(directions[i]), missions[i].numpy())
            out[i, self.table.get(key, 0)] = 1.0
        return out


class SessionLookupPolicy(LookupPolicy):
    """The bot replay through a rollout session: the mission reaches it only as the code."""

    def rollout_session(self) -> SessionLookupPolicy:
        return self

    def encode(self, missions: torch.Tensor) -> torch.Tensor:
        return missions.clone()

    def __call__(self, images: torch.Tensor, directions: torch.Tensor, codes: torch.Tensor):
        return super().__call__(images, directions, codes)


def test_session_codes_follow_refilled_slots() -> None:
    policy = SessionLookupPolicy(SEEDS)  # bot lengths differ, so slots refill at other steps
    episodes = rollout(policy, SEEDS, batch_size=2)
    assert episodes.success.all()
    assert episodes.length.tolist() == policy.lengths


def test_bot_replay_succeeds_with_the_bot_lengths() -> None:
    policy = LookupPolicy(SEEDS)
    episodes = rollout(policy, SEEDS, batch_size=2)  # slots are refilled
    assert episodes.success.all()
    assert episodes.length.tolist() == policy.lengths
    assert list(episodes.seeds) == SEEDS


def test_always_done_succeeds_only_when_facing_a_target() -> None:
    def always_done(images: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(images), 7)
        out[:, 6] = 1.0
        return out

    seeds = list(range(40))
    episodes = rollout(always_done, seeds, batch_size=16)
    env = make_env()
    facing = []
    for seed in seeds:
        env.reset(seed=seed)
        facing.append(env.facing_target())
    assert episodes.success.tolist() == facing
    assert all(n == (1 if ok else 64) for n, ok in zip(episodes.length, facing, strict=True))


def test_vectorised_equals_one_env_at_a_time() -> None:
    torch.manual_seed(0)
    policy = FilmPolicy()
    seeds = [5, 6, 7]
    fast = rollout(policy, seeds, batch_size=2)
    slow = reference_rollout(policy, seeds)
    assert fast.success.tolist() == slow.success.tolist()
    assert fast.length.tolist() == slow.length.tolist()
    assert fast.missions == slow.missions


class WanderPolicy(LookupPolicy):
    """Deterministic and Markov: the bot's action on its demos' frames after the first two,
    elsewhere a turn or a step forward chosen by a hash of the frame — a walk from the start
    that may meet the bot's path (and then succeed) or loop."""

    def __init__(self, seeds: list[int]) -> None:
        super().__init__(seeds)
        env = make_env()
        for seed in seeds:
            images, directions, _, tokens = bot_demo(env, seed)
            for im, d in zip(images[:2], directions[:2], strict=True):
                self.table.pop(self._key(im, int(d), tokens), None)

    def __call__(self, images: torch.Tensor, directions: torch.Tensor, missions: torch.Tensor):
        out = super().__call__(images, directions, missions)
        mix = (images.long().flatten(1) * torch.arange(1, 193)).sum(1) * 7 + directions.long()
        unseen = out[:, 0] == 1.0  # the lookup's default
        for i in torch.nonzero(unseen).flatten().tolist():
            key = self._key(images[i].numpy(), int(directions[i]), missions[i].numpy())
            if key not in self.table:
                out[i] = 0.0
                out[i, int(mix[i] % 1009) % 3] = 1.0
        return out


def test_cycle_cut_gives_the_episodes_of_stepping_to_the_end() -> None:
    torch.manual_seed(0)
    seeds = list(range(100, 148))
    bot = LookupPolicy(seeds[::3])  # the bot on a third of the seeds, `left` forever elsewhere
    wander = WanderPolicy(seeds)
    lengths = set()
    for policy in (bot, wander, FilmPolicy()):
        cut = rollout(policy, seeds, batch_size=8)
        whole = rollout(policy, seeds, batch_size=8, cut_cycles=False)
        assert cut.success.tolist() == whole.success.tolist()
        assert cut.length.tolist() == whole.length.tolist()
        assert whole.frames == int(whole.length.sum())
        assert cut.frames < whole.frames  # the loops were not stepped
        lengths.update(whole.length[~whole.success].tolist())
    assert rollout(bot, seeds, batch_size=8).success.sum() == len(seeds[::3])
    assert lengths == {64}  # every failure is a step-limit one, cut or stepped


def test_goal_sets_are_split_back_by_name() -> None:
    policy = LookupPolicy(SEEDS[:3])
    results = evaluate_goal_sets(policy, {"id": SEEDS[:3], "ood": [101, 102]}, batch_size=8)
    assert results["id"].success.all()
    assert list(results["ood"].seeds) == [101, 102]
    assert results["id"].success_rate == 1.0


def test_fresh_goal_seeds_are_goal_balanced() -> None:
    goals = [ID_GOALS[0], OOD_GOALS[0]]
    seeds = fresh_goal_seeds(goals, 2, start=1000)
    env = make_env()
    missions = [env.reset_layout(seed=s) for s in seeds]
    assert missions == [goals[0], goals[0], goals[1], goals[1]]
    assert min(seeds) >= 1000
