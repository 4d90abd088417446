"""Configuration of the MiniGrid PPO experiments (frozen dataclasses; no torch import).

The defaults are the community repository's MiniGrid settings (rl-starter-files training
script with its RIM edits, ``torch_ac``'s PPO): 16 environments, 128 frames per environment
and update, Adam with learning rate 1e-4, BPTT over 32 steps, and so on. Where we changed a
default on purpose (the initial seed, the cell-state bug) the field's docstring says so.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

from compkit_utils.devices import DeviceName
from compkit_utils.errors import UserError
from compkit_utils.validate import InputFile, OutputDir, Range
from rim_cells.config import ModelRIM, Positive, RIMConfig

Fraction = Annotated[float, Range(0, 1)]
"""A number in [0, 1]."""
PositiveFloat = Annotated[float, Range(0, None, lo_open=True)]
"""A number > 0."""
NonNegative = Annotated[float, Range(0)]
"""A number >= 0."""

#: Each task: the training environment first, then the larger variants it is evaluated on
#: zero-shot, and the number of training frames the original README recommends.
TASKS: dict[str, tuple[tuple[str, ...], int]] = {
    "empty": (("MiniGrid-Empty-5x5-v0", "MiniGrid-Empty-16x16-v0"), 80_000),
    "multiroom": (
        (
            "MiniGrid-MultiRoom-N2-S4-v0",
            # The README's "N2-S5 (4 rooms)" id does not exist; the 4-room environment is
            # registered as -v1 in current minigrid (its -v0 id has 6 rooms).
            "MiniGrid-MultiRoom-N4-S5-v1",
            "MiniGrid-MultiRoom-N6-v0",
        ),
        1_000_000,
    ),
    "doorkey": (
        (
            "MiniGrid-DoorKey-5x5-v0",
            "MiniGrid-DoorKey-6x6-v0",
            "MiniGrid-DoorKey-8x8-v0",
            "MiniGrid-DoorKey-16x16-v0",
        ),
        300_000,
    ),
}


def zero_shot_envs(env_id: str) -> tuple[str, ...]:
    """The training environment followed by its larger variants (or just itself)."""
    for envs, _ in TASKS.values():
        if env_id in envs:
            return (env_id, *(e for e in envs[envs.index(env_id) + 1 :]))
    return (env_id,)


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Environments: which MiniGrid task and how many copies step in parallel."""

    env_id: str = "MiniGrid-Empty-5x5-v0"
    """Gymnasium id of the training environment (MiniGrid-Empty-*, -DoorKey-*, -MultiRoom-*...)."""
    num_envs: Positive = 16
    """Parallel environments (the original's ``--procs``); env i is seeded with seed + 10000·i."""
    vectorization: Literal["sync", "async"] = "sync"
    """Gymnasium vector env: ``sync`` steps them in this process, ``async`` in subprocesses."""


def _minigrid_rim() -> RIMConfig:
    """The RIM memory of the original's MiniGrid runs: 4 units of 16, 3 active."""
    return RIMConfig(num_units=4, k_active=3, hidden_size=16, input_value_size=64)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Actor-critic: conv image encoder, recurrent memory (RIM or LSTM), actor and critic heads."""

    memory: Literal["rim", "lstm"] = "rim"
    """Recurrent memory: a RIM cell (N units of H, k active) or a single ``LSTMCell`` baseline."""
    rim: ModelRIM = dataclasses.field(default_factory=_minigrid_rim)
    """The RIM memory (with ``--model.memory rim``); its width is N·H, memory = [h; c]."""
    lstm_hidden: Positive = 64
    """Hidden size of the LSTM baseline (64 = the RIM's 4 × 16); memory = [h; c]."""
    cell_state_bug: bool = False
    """Parity with the original: overwrite the stored cell state c with h before every memory step
    (the bug present when the README results were produced). Off = the fixed behaviour."""

    def check(self) -> None:
        """The memory is [h; c]: RIM units must be LSTM cells."""
        if self.memory == "rim" and self.rim.rnn_cell != "LSTM":
            raise UserError(
                f"--model.rnn-cell {self.rim.rnn_cell}: the MiniGrid memory is [h; c] of LSTM "
                "units; use --model.rnn-cell LSTM (or --model.memory lstm)"
            )

    @property
    def hidden_size(self) -> int:
        """Width of the memory's h: N·H for a RIM, ``lstm_hidden`` for the LSTM."""
        return self.rim.width if self.memory == "rim" else self.lstm_hidden


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO (torch_ac-style, recurrent) hyperparameters; defaults are the original's."""

    frames_per_proc: Positive = 128
    """Rollout length per environment and update (16 × 128 = 2048 frames per update)."""
    discount: Fraction = 0.99
    """Discount γ."""
    gae_lambda: Fraction = 0.95
    """GAE λ."""
    lr: PositiveFloat = 1e-4
    """Adam learning rate (rl-starter-files uses 1e-3; the RIM scripts 1e-4)."""
    adam_eps: PositiveFloat = 1e-8
    """Adam ε."""
    clip_eps: PositiveFloat = 0.2
    """Clipping range of the policy ratio and of the value change."""
    epochs: Positive = 4
    """Optimisation epochs over each rollout."""
    batch_size: Positive = 256
    """Frames per minibatch (batch_size / recurrence sequences of recurrence steps)."""
    recurrence: Positive = 32
    """BPTT length: steps per sequence chunk in the update (must divide frames_per_proc)."""
    entropy_coef: NonNegative = 0.01
    """Entropy bonus coefficient."""
    value_loss_coef: NonNegative = 0.5
    """Value loss coefficient."""
    max_grad_norm: PositiveFloat = 0.5
    """Global gradient-norm clip."""

    def check(self) -> None:
        """Rollouts split into whole BPTT chunks; minibatches hold whole chunks."""
        if self.frames_per_proc % self.recurrence:
            raise UserError(
                f"--ppo.frames-per-proc ({self.frames_per_proc}) must be a multiple of "
                f"--ppo.recurrence ({self.recurrence})"
            )
        if self.batch_size % self.recurrence:
            raise UserError(
                f"--ppo.batch-size ({self.batch_size}) must be a multiple of "
                f"--ppo.recurrence ({self.recurrence})"
            )


@dataclasses.dataclass(frozen=True)
class LogConfig:
    """Logging and checkpoints."""

    console_every: Annotated[int, Range(0)] = 1
    """Echo a console line every N updates (0 = never)."""
    save_every: Positive = 10
    """Write a checkpoint every N updates (and always at the end)."""
    keep_last: Positive = 3
    """Step checkpoints to keep (``last.pt`` is always kept)."""
    tensorboard: bool = False
    """Mirror metrics to TensorBoard (needs the ``tensorboard`` extra)."""
    wandb: bool = False
    """Mirror metrics to Weights & Biases (needs the ``wandb`` extra)."""


@dataclasses.dataclass(frozen=True)
class MiniGridTrainConfig:
    """Train an actor-critic with RIM or LSTM memory on a MiniGrid task with recurrent PPO."""

    env: EnvConfig = dataclasses.field(default_factory=EnvConfig)
    """Environment settings."""
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    """Model settings."""
    ppo: PPOConfig = dataclasses.field(default_factory=PPOConfig)
    """PPO settings."""
    log: LogConfig = dataclasses.field(default_factory=LogConfig)
    """Logging settings."""
    frames: Positive = 80_000
    """Training frames (README: 80k Empty-5x5, 1M MultiRoom-N2-S4, 300k DoorKey-5x5)."""
    eval_episodes: Annotated[int, Range(0)] = 100
    """Episodes of the final evaluation (sampled actions) on the training env (eval/...) and,
    zero-shot, on its larger variants (zeroshot/<env id>/...); 0 = none."""
    seed: int = 0
    """Random seed (the original script used 1)."""
    device: DeviceName = "auto"
    """Device: auto = CUDA if available, else CPU."""
    threads: Annotated[int | None, Range(1)] = 1
    """torch CPU threads; 1 is fastest for this tiny model (None = torch's choice)."""
    runs_dir: Annotated[Path | None, OutputDir()] = None
    """Runs root (default: $RUNS_DIR, else ./runs)."""
    run_name: str | None = None
    """Run directory name (default minigrid-train__<seed>__<UTC time>)."""
    resume: bool = False
    """Continue the run named by --run-name from its last checkpoint."""
    smoke: bool = False
    """Tiny run of the full code path (Empty-5x5, 2 envs, 2 updates); seconds on a CPU.
    Explicit flags still win (``--smoke --frames 128``)."""

    @classmethod
    def smoke_defaults(cls) -> MiniGridTrainConfig:
        """The ``--smoke`` settings: 2 Empty-5x5 envs, 2 short updates, a 4-episode eval."""
        return cls(
            env=EnvConfig(env_id="MiniGrid-Empty-5x5-v0", num_envs=2),
            ppo=PPOConfig(frames_per_proc=16, recurrence=4, batch_size=16, epochs=2),
            log=LogConfig(save_every=1),
            frames=64,
            eval_episodes=4,
            smoke=True,
        )


@dataclasses.dataclass(frozen=True)
class MiniGridEvaluateConfig:
    """Evaluate a trained checkpoint, zero-shot on larger variants: mean return / frames table."""

    checkpoint: Annotated[Path, InputFile()] = Path("checkpoints/last.pt")
    """Checkpoint (``.pt``) written by ``rim-cells minigrid train``."""
    env: tuple[str, ...] = ()
    """Environment ids (default: the training env and its larger variants)."""
    episodes: Positive = 100
    """Episodes per environment."""
    num_envs: Positive = 16
    """Parallel environments (env i seeded with seed + 10000·i)."""
    argmax: bool = False
    """Greedy actions instead of sampling from the policy."""
    seed: int = 0
    """Random seed."""
    threads: Annotated[int | None, Range(1)] = 1
    """torch CPU threads (None = torch's choice)."""
    device: DeviceName = "auto"
    """Device."""
    output: Path | None = None
    """Also write the results as JSON here."""


@dataclasses.dataclass(frozen=True)
class MiniGridVisualizeConfig:
    """Render one episode of a trained agent (rgb_array) into a GIF."""

    checkpoint: Annotated[Path, InputFile()] = Path("checkpoints/last.pt")
    """Checkpoint (``.pt``) written by ``rim-cells minigrid train``."""
    env: str | None = None
    """Environment id (default: the training env)."""
    out: Path = Path("episode.gif")
    """Output GIF path."""
    argmax: bool = False
    """Greedy actions instead of sampling."""
    seed: int = 0
    """Seed of the episode."""
    max_steps: Annotated[int | None, Range(1)] = None
    """Stop after this many steps (default: the environment's own limit)."""
    fps: PositiveFloat = 6.0
    """Frames per second of the GIF."""
    tile_size: Positive = 32
    """Pixels per grid cell in the rendering."""
    device: DeviceName = "auto"
    """Device."""
