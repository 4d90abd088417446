"""MiniGrid environments through gymnasium, vectorised, and observation preprocessing.

Description:
    Any registered MiniGrid task (``MiniGrid-Empty-*``, ``-DoorKey-*``, ``-MultiRoom-*`` ...)
    from the Farama ``minigrid`` package, wrapped so that the observation is the egocentric
    partial view only (the mission string is dropped, as in the original, which tokenised it
    but never used it).

Observation:
    ``uint8`` array (7, 7, 3) of integer codes (object type, colour, state) per visible cell;
    :func:`preprocess_obs` turns a batch into a float tensor (B, 3, 7, 7), without
    normalisation.

Actions:
    ``Discrete(7)``: left, right, forward, pickup, drop, toggle, done.

Rewards:
    ``1 - 0.9 · steps / max_steps`` on success, else 0.

Termination:
    Success ends the episode (terminated); reaching ``max_steps`` truncates it. The vector
    environment resets a finished copy in the same step (gymnasium's ``SAME_STEP`` autoreset),
    so the returned observation is already the first one of the next episode, as in torch_ac.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from compkit_utils.errors import UserError

if TYPE_CHECKING:
    import gymnasium as gym
    import torch

#: Environment i of a vector env is seeded with ``seed + SEED_STRIDE * i`` (as the original).
SEED_STRIDE = 10_000


def make_env(env_id: str, render_mode: str | None = None, **kwargs: Any) -> gym.Env:
    """One MiniGrid environment whose observation is the image only.

    Args:
        env_id: a registered gymnasium id, e.g. ``"MiniGrid-Empty-5x5-v0"``.
        render_mode: ``None`` or ``"rgb_array"`` (for GIFs).
        **kwargs: passed to the environment (``tile_size=32`` for instance).

    Raises:
        UserError: the id is not a registered environment, or not a MiniGrid one.
    """
    import gymnasium as gym
    import minigrid  # noqa: F401  (registers the MiniGrid-* ids)
    from minigrid.wrappers import ImgObsWrapper

    try:
        env = gym.make(env_id, render_mode=render_mode, **kwargs)
    except gym.error.Error as exc:
        raise UserError(
            f"unknown environment {env_id!r} ({exc}); use a registered id such as "
            "MiniGrid-Empty-5x5-v0, MiniGrid-DoorKey-5x5-v0 or MiniGrid-MultiRoom-N2-S4-v0"
        ) from exc
    space = env.observation_space
    if not (isinstance(space, gym.spaces.Dict) and "image" in space.spaces):
        env.close()
        raise UserError(
            f"{env_id} is not a MiniGrid environment (no 'image' observation); use a "
            "MiniGrid-* id such as MiniGrid-Empty-5x5-v0 or MiniGrid-DoorKey-5x5-v0"
        )
    return ImgObsWrapper(env)


class _EnvFactory:
    """Picklable environment constructor (async vector envs send it to subprocesses)."""

    def __init__(self, env_id: str) -> None:
        self.env_id = env_id

    def __call__(self) -> gym.Env:
        return make_env(self.env_id)


def make_vector_env(
    env_id: str, num_envs: int, vectorization: str = "sync"
) -> gym.vector.VectorEnv:
    """``num_envs`` copies of an environment in a gymnasium vector env (same-step autoreset).

    Args:
        env_id: gymnasium id.
        num_envs: number of copies.
        vectorization: ``"sync"`` (one process) or ``"async"`` (one subprocess per copy).

    Returns:
        A vector env with observations of shape (num_envs, 7, 7, 3); call
        :func:`reset_vector_env` to seed it.
    """
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode

    make_env(env_id).close()  # fail early, in this process, on a bad id
    fns = [_EnvFactory(env_id) for _ in range(num_envs)]
    if vectorization == "sync":
        return gym.vector.SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    if vectorization == "async":
        return gym.vector.AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    raise UserError(f"--env.vectorization is {vectorization!r}; use sync or async")


def reset_vector_env(envs: gym.vector.VectorEnv, seed: int) -> np.ndarray:
    """Reset every copy, env i with seed ``seed + 10000·i``; returns images (n, 7, 7, 3)."""
    seeds = [seed + SEED_STRIDE * i for i in range(envs.num_envs)]
    obs, _ = envs.reset(seed=seeds)  # pyright: ignore[reportArgumentType]
    return np.asarray(obs)


def preprocess_obs(images: Any, device: torch.device | str = "cpu") -> torch.Tensor:
    """Batch of MiniGrid images (B, H, W, 3) → float tensor (B, 3, H, W), unnormalised.

    The (x, y) grid indexing of MiniGrid is kept: output[b, channel, x, y].
    """
    import torch

    array = np.asarray(images)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected images of shape (B, H, W, 3), got {array.shape}")
    tensor = torch.as_tensor(array, dtype=torch.float32, device=device)
    return tensor.permute(0, 3, 1, 2).contiguous()
