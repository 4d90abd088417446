"""Experts trained with stable-baselines3 (tuned PPO, or the original's DQN settings).

``ilpo expert`` trains one, saves it as ``expert.zip`` (+ ``expert.json`` naming the env
and algorithm) in its run directory and records the clean (deterministic) return over
held-out evaluation episodes in ``metrics.jsonl``. :func:`load_expert` turns a saved
expert back into a greedy ``obs -> action`` function.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compkit_utils.errors import UserError

if TYPE_CHECKING:
    from ilpo.config import ExpertConfig

__all__ = [
    "EVAL_SEED_OFFSET",
    "Policy",
    "evaluate_policy",
    "expert_settings",
    "load_expert",
    "train_expert",
]

_log = logging.getLogger(__name__)

Policy = Callable[[np.ndarray], int]
EVAL_SEED_OFFSET = 1_000_000
"""Evaluation episodes use seeds ``seed + EVAL_SEED_OFFSET + i`` (held out from training)."""

EVAL_STOP_EPISODES = 10
EVAL_STOP_EVERY = 5_000
EXPERT_FILE = "expert.zip"
META_FILE = "expert.json"
SB3_LOG_DIR = "sb3"
"""Folder of the run that holds stable-baselines3's ``progress.csv``."""


def _linear(start: float) -> Callable[[float], float]:
    """SB3 schedule decaying linearly from ``start`` to 0 over training."""

    def schedule(progress_remaining: float) -> float:
        return progress_remaining * start

    return schedule


def expert_settings(env: str, algo: str) -> dict[str, Any]:
    """The algorithm's settings for ``env``: budget, vec-env count and SB3 keyword args.

    PPO: rl-zoo hyper-parameters; on CartPole-v1 training stops once 10 deterministic
    evaluation episodes average 500 (checked every 5,000 steps). DQN: the original's
    OpenAI-baselines settings: one hidden layer of 64 ReLU units, Adam 1e-3, buffer 50,000,
    epsilon 1.0 -> 0.02 over the first 10%, batch 32, learning starts at 1,000, gamma 1.0,
    target update every 500 steps, 100,000 steps, and on CartPole the early stop at a
    100-episode training mean of 199 (SB3's DQN has no double-Q; the original's had).
    dqn-zoo: rl-zoo's DQN settings for MountainCar-v0 (PPO without observation
    normalisation does not leave -200 there).
    """
    if algo == "dqn-zoo":
        return {
            "timesteps": 120_000,
            "n_envs": 1,
            "stop_mean_reward": None,
            "stop_eval_return": None,
            "kwargs": {
                "learning_rate": 4e-3,
                "batch_size": 128,
                "buffer_size": 10_000,
                "learning_starts": 1_000,
                "gamma": 0.98,
                "target_update_interval": 600,
                "train_freq": 16,
                "gradient_steps": 8,
                "exploration_fraction": 0.2,
                "exploration_final_eps": 0.07,
                "policy_kwargs": {"net_arch": [256, 256]},
            },
        }
    if algo == "dqn":
        return {
            "timesteps": 100_000,
            "n_envs": 1,
            "stop_mean_reward": 199.0 if env == "CartPole-v1" else None,
            "stop_eval_return": None,
            "kwargs": {
                "learning_rate": 1e-3,
                "buffer_size": 50_000,
                "exploration_fraction": 0.1,
                "exploration_initial_eps": 1.0,
                "exploration_final_eps": 0.02,
                "batch_size": 32,
                "train_freq": 1,
                "gradient_steps": 1,
                "learning_starts": 1_000,
                "gamma": 1.0,
                "target_update_interval": 500,
                "policy_kwargs": {"net_arch": [64]},
            },
        }
    if env == "CartPole-v1":
        return {
            "timesteps": 100_000,
            "n_envs": 8,
            "stop_mean_reward": None,
            "stop_eval_return": 500.0,
            "kwargs": {
                "n_steps": 32,
                "batch_size": 256,
                "n_epochs": 20,
                "gamma": 0.98,
                "gae_lambda": 0.8,
                "ent_coef": 0.0,
                "learning_rate": _linear(1e-3),
                "clip_range": _linear(0.2),
            },
        }
    # Acrobot-v1 (rl-zoo settings) and MountainCar-v0 (same settings, not tuned) share these.
    return {
        "timesteps": 100_000 if env == "Acrobot-v1" else 300_000,
        "n_envs": 16,
        "stop_mean_reward": None,
        "stop_eval_return": None,
        "kwargs": {
            "n_steps": 256,
            "gamma": 0.99,
            "gae_lambda": 0.94,
            "n_epochs": 4,
            "ent_coef": 0.0,
        },
    }


def make_env(env_id: str) -> Any:
    """A single gymnasium env; unknown ids are a :class:`UserError`."""
    import gymnasium as gym

    try:
        return gym.make(env_id)
    except gym.error.Error as exc:
        raise UserError(f"unknown environment {env_id!r}: {exc}") from None


def evaluate_policy(
    policy: Policy, env_id: str, episodes: int, seed: int
) -> tuple[float, float, list[float]]:
    """Mean, std and per-episode returns of ``policy`` over ``episodes`` seeded episodes."""
    env = make_env(env_id)
    returns: list[float] = []
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(policy(obs))
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    arr = np.asarray(returns)
    return float(arr.mean()), float(arr.std()), returns


def _sb3_policy(model: Any) -> Policy:
    def act(obs: np.ndarray) -> int:
        action, _ = model.predict(obs, deterministic=True)
        return int(action)

    return act


def load_expert(path: str | Path) -> tuple[Policy, str]:
    """Load a saved expert (its run directory or ``expert.zip``).

    Returns:
        The greedy policy and the env id it was trained on.

    Raises:
        UserError: the path holds no expert saved by ``ilpo expert``.
    """
    path = Path(path)
    run_dir = path if path.is_dir() else path.parent
    meta_path, zip_path = run_dir / META_FILE, run_dir / EXPERT_FILE
    if not meta_path.is_file() or not zip_path.is_file():
        raise UserError(
            f"{path} is not an expert: expected {EXPERT_FILE} and {META_FILE} from "
            "`ilpo expert` in that run directory"
        )
    try:
        meta = json.loads(meta_path.read_text())
        env_id, algo = str(meta["env"]), str(meta["algo"])
    except (ValueError, KeyError) as exc:
        raise UserError(f"{meta_path} is not a valid expert description: {exc}") from None
    from stable_baselines3 import DQN, PPO

    cls = PPO if algo == "ppo" else DQN
    model = cls.load(zip_path, device="cpu")
    return _sb3_policy(model), env_id


def _stop_callback(stop_mean_reward: float) -> Any:
    """The original's early stop: 100-episode training mean >= threshold after t > 100."""
    from stable_baselines3.common.callbacks import BaseCallback

    class StopOnMean(BaseCallback):
        def _on_step(self) -> bool:
            buffer = self.model.ep_info_buffer
            if self.num_timesteps <= 100 or buffer is None or len(buffer) < 100:
                return True
            mean = float(np.mean([info["r"] for info in buffer]))
            return mean < stop_mean_reward

    return StopOnMean()


def _eval_stop_callback(env_id: str, threshold: float, every: int, seed: int) -> Any:
    """Stop once ``EVAL_STOP_EPISODES`` deterministic episodes average ``threshold``.

    Checked every ``every`` environment steps on training-disjoint seeds (the final
    clean-return check uses yet other seeds).
    """
    from stable_baselines3.common.callbacks import BaseCallback

    class StopOnEval(BaseCallback):
        next_check = every

        def _on_step(self) -> bool:
            if self.num_timesteps < self.next_check:
                return True
            self.next_check += every
            mean, _, _ = evaluate_policy(
                _sb3_policy(self.model), env_id, EVAL_STOP_EPISODES, seed + 2 * EVAL_SEED_OFFSET
            )
            return mean < threshold

    return StopOnEval()


def train_expert(cfg: ExpertConfig) -> Path:
    """Run ``ilpo expert``: train, save, evaluate; returns the run directory."""
    from compkit_utils.devices import pick_device, set_threads
    from compkit_utils.logging import RunLogger
    from compkit_utils.runs import open_run, write_config
    from compkit_utils.seeding import seed_everything

    make_env(cfg.env).close()  # an unknown env fails before the run directory exists
    device = pick_device(cfg.device)
    set_threads(cfg.threads)
    settings = expert_settings(cfg.env, cfg.algo)
    timesteps = cfg.timesteps if cfg.timesteps is not None else settings["timesteps"]
    with open_run(
        "ilpo", "expert", seed=cfg.seed, runs_dir=cfg.runs_dir, run_name=cfg.run_name
    ) as run:
        write_config(run.path, cfg, "ilpo")
        seed_everything(cfg.seed)
        from stable_baselines3 import DQN, PPO
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.logger import configure as configure_sb3_logger

        vec_env = make_vec_env(cfg.env, n_envs=settings["n_envs"], seed=cfg.seed)
        kwargs = dict(settings["kwargs"])
        if cfg.algo == "ppo" and cfg.smoke:
            kwargs["batch_size"] = min(kwargs.get("batch_size", 64), 64)
        cls = PPO if cfg.algo == "ppo" else DQN
        model = cls("MlpPolicy", vec_env, seed=cfg.seed, device=device, verbose=0, **kwargs)
        # SB3's progress table goes to the run (its default is a new folder in the temp dir)
        model.set_logger(configure_sb3_logger(str(run.path / SB3_LOG_DIR), ["csv"]))
        stop, stop_eval = settings["stop_mean_reward"], settings["stop_eval_return"]
        callback = None
        if stop is not None:
            callback = _stop_callback(stop)
        elif stop_eval is not None and cfg.early_stop:
            callback = _eval_stop_callback(cfg.env, stop_eval, EVAL_STOP_EVERY, cfg.seed)
        model.learn(total_timesteps=timesteps, callback=callback)
        vec_env.close()
        model.save(run.path / EXPERT_FILE)
        (run.path / META_FILE).write_text(
            json.dumps({"env": cfg.env, "algo": cfg.algo, "timesteps": model.num_timesteps}) + "\n"
        )
        mean, std, _ = evaluate_policy(
            _sb3_policy(model), cfg.env, cfg.eval_episodes, cfg.seed + EVAL_SEED_OFFSET
        )
        with RunLogger(run.path, console_every=0, package="ilpo") as logger:
            logger.log(
                int(model.num_timesteps),
                {
                    "expert/return_mean": mean,
                    "expert/return_std": std,
                    "expert/episodes": cfg.eval_episodes,
                    "expert/timesteps": int(model.num_timesteps),
                },
            )
        print(
            f"expert {cfg.algo} on {cfg.env} after {model.num_timesteps} steps: clean return "
            f"{mean:.2f} ± {std:.2f} over {cfg.eval_episodes} episodes; saved {run.path}"
        )
    return run.path
