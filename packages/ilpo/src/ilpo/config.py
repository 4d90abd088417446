"""Configuration of every ``ilpo`` command as frozen dataclasses.

Every field declares its valid values with a :mod:`compkit_utils.validate` marker
(``Range``, ``InputPath``, ``OutputDir``) and cross-field rules live in ``check`` methods;
``compkit_utils.config.run_cli`` validates the parsed config before a command starts.
``--smoke`` only changes defaults (``smoke_defaults``), so explicit flags win.

This module imports no torch, so ``ilpo --help`` stays instant.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal, Self

from compkit_utils.devices import DeviceName
from compkit_utils.errors import UserError
from compkit_utils.validate import Choice, InputPath, OutputDir, Range

__all__ = [
    "ENVS",
    "IMAGE_ENVS",
    "AnyEnvName",
    "AtLeast1",
    "CollectConfig",
    "DeviceName",
    "EnvName",
    "ExpertAlgo",
    "ExpertConfig",
    "InspectConfig",
    "Positive",
    "RunsDir",
    "Seed",
    "Threads",
]

AtLeast1 = Annotated[int, Range(1)]
Positive = Annotated[float, Range(0, None, lo_open=True)]
Seed = Annotated[int, Range(0)]
Threads = Annotated[int | None, Range(1)]
RunsDir = Annotated[Path | None, OutputDir()]
ENVS = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0")
"""The vector environments of the package (the paper's two, and MountainCar)."""
EnvName = Annotated[str, Choice(*ENVS)]
IMAGE_ENVS = ("MiniGrid-Empty-Random-6x6-v0", "MiniGrid-Empty-8x8-v0")
"""The image (MiniGrid, 128×128 RGB frames) environments; :mod:`ilpo.gridworld` builds them."""
AnyEnvName = Annotated[str, Choice(*ENVS, *IMAGE_ENVS)]
ExpertAlgo = Literal["ppo", "dqn", "dqn-zoo"]
DataKind = Literal["auto", "states", "bc"]


@dataclasses.dataclass(frozen=True)
class ExpertConfig:
    """Train an expert with stable-baselines3 and record its clean return."""

    env: EnvName = "CartPole-v1"
    """Gymnasium environment of the expert."""
    algo: ExpertAlgo = "ppo"
    """ppo = tuned rl-zoo settings (fast; CartPole, Acrobot); dqn = the original's settings
    (one 64-unit hidden layer, lr 1e-3, gamma 1.0, 100k steps, CartPole early stop at a
    100-episode mean of 199); dqn-zoo = rl-zoo's DQN, the one that solves MountainCar."""
    timesteps: Annotated[int | None, Range(1)] = None
    """Environment-step budget (default: the algorithm's setting for --env)."""
    eval_episodes: AtLeast1 = 100
    """Deterministic episodes (held-out seeds) of the clean-return check at the end."""
    early_stop: bool = True
    """PPO on CartPole-v1: stop once 10 deterministic evaluation episodes (every 5,000
    steps) average 500, the maximum; --no-early-stop spends the whole budget."""
    seed: Seed = 0
    """Seeds the expert's training and its evaluation episodes."""
    threads: Threads = None
    """CPU threads for torch (default: $OMP_NUM_THREADS, else one per idle core)."""
    device: DeviceName = "cpu"
    """Device of the policy (small MLPs are fastest on the CPU)."""
    runs_dir: RunsDir = None
    """Runs root (default: $RUNS_DIR, else ./runs); the run goes to <runs-dir>/ilpo/."""
    run_name: str | None = None
    """Run directory name (default expert__<seed>__<UTC time>)."""
    smoke: bool = False
    """Seconds-long run of the full code path: 512 steps, 2 evaluation episodes."""

    @classmethod
    def smoke_defaults(cls) -> Self:
        """The defaults of ``expert --smoke``."""
        return cls(smoke=True, timesteps=512, eval_episodes=2)


@dataclasses.dataclass(frozen=True)
class CollectConfig:
    """Collect demonstrations with the noisy demonstrator (expert or random action)."""

    expert: Annotated[Path | None, InputPath()] = None
    """An `ilpo expert` run directory (or its expert.zip); the env is the expert's."""
    env: Annotated[str | None, Choice(*IMAGE_ENVS)] = None
    """An image environment instead of --expert: its shortest-path (BFS) expert demonstrates,
    and the run holds `[A|B]` PNG pairs and frames.h5."""
    transitions: Annotated[int | None, Range(1)] = None
    """Collect whole episodes until at least this many transitions (the last episode is
    finished, so slightly more are written); default 50,000 (vector), 5,000 (image)."""
    greedy_prob: Annotated[float, Range(0, 1)] = 0.75
    """Probability of the expert's action at each step; otherwise a uniform random one."""
    seed: Seed = 0
    """Seeds the episodes (reset seeds seed, seed+1, ...) and the random actions."""
    threads: Threads = None
    """CPU threads for torch (default: $OMP_NUM_THREADS, else one per idle core)."""
    runs_dir: RunsDir = None
    """Runs root (default: $RUNS_DIR, else ./runs); the run goes to <runs-dir>/ilpo/."""
    run_name: str | None = None
    """Run directory name (default collect__<seed>__<UTC time>)."""
    smoke: bool = False
    """Seconds-long run: 500 transitions; without --expert, uses the newest smoke expert of
    the runs root, training one first if there is none."""

    def check(self) -> None:
        """An expert is needed unless --smoke finds (or trains) one or --env is an image env."""
        if self.expert is not None and self.env is not None:
            raise UserError("pass either --expert (vector env) or --env (image env), not both")
        if self.expert is None and self.env is None and not self.smoke:
            raise UserError(
                "pass --expert PATH (an `ilpo expert` run directory) or --env <image env>"
            )

    @classmethod
    def smoke_defaults(cls) -> Self:
        """The defaults of ``collect --smoke``."""
        return cls(smoke=True, transitions=500)


@dataclasses.dataclass(frozen=True)
class InspectConfig:
    """Check a demonstration dataset and print its summary (writes nothing)."""

    data: Annotated[Path, InputPath()]
    """A folder of *.txt files (`[s] [s']` or `[s] [a] [s']` lines), a .txt or .h5 file,
    an `ilpo collect` run directory, or a folder of `[A|B]` PNG frame pairs."""
    env: Annotated[str | None, Choice(*ENVS, *IMAGE_ENVS)] = None
    """Also check that the data fits this env (observation size, action count)."""
    kind: DataKind = "auto"
    """states = state-only data expected (a BC file is an error); bc = actions required."""
    max_transitions: Annotated[int | None, Range(1)] = 50_000
    """Read at most this many transitions (the original's cap); pass None for all."""
