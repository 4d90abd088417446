"""Configuration of ``leaps-karel pretrain`` (stage 1) and of the model; torch-free.

Defaults are the released LEAPS run (learning spec §4–§5): batch 256, Adam 1e-3 with StepLR
×0.95 every 10 epochs, β = 0.1, 150 epochs, seed 123, the REINFORCE phase of §3.5 once the
validation greedy program accuracy reaches 80 %.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Self

from compkit_utils.devices import DeviceName
from compkit_utils.errors import UserError
from compkit_utils.validate import Choice, InputPath, OutputDir, Range

__all__ = ["VARIANTS", "ModelConfig", "PretrainConfig", "Variant"]

AtLeast1 = Annotated[int, Range(1)]
Positive = Annotated[float, Range(0, None, lo_open=True)]
NonNegative = Annotated[float, Range(0)]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One stage-1 variant (learning spec §4).

    Attributes:
        name: ``LEAPS``, ``LEAPSP``, ``LEAPSPR`` or ``LEAPSPL``.
        executor_loss: λ_L, the weight of the executor imitation loss L^L.
        environment_states: the executor sees simulator-stepped states (else s_0 throughout).
        rl: the REINFORCE phase L^R runs after each supervised epoch (above the threshold).
    """

    name: str
    executor_loss: float
    environment_states: bool
    rl: bool


VARIANTS: dict[str, Variant] = {
    "LEAPS": Variant("LEAPS", 1.0, True, True),
    "LEAPSP": Variant("LEAPSP", 0.0, False, False),
    "LEAPSPR": Variant("LEAPSPR", 0.0, False, True),
    "LEAPSPL": Variant("LEAPSPL", 1.0, True, False),
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of the program VAE (learning spec §1); the defaults are the released model."""

    hidden: AtLeast1 = 256
    """GRU hidden size = latent size (the decoder's and executor's initial hidden state is z)."""
    decode_steps: AtLeast1 = 45
    """Decoder steps (max program length without DEF)."""
    executor_steps: AtLeast1 = 99
    """Executor horizon (max demo length − 1)."""
    executor_hw: tuple[int, int] = (8, 8)
    """Grid the executor's CNN is built for (its flatten size hard-codes it)."""


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Train the stage-1 program embedding (VAE + neural executor) on a program dataset."""

    variant: Annotated[str, Choice(*VARIANTS)] = "LEAPS"
    """LEAPS (P+R+L), LEAPSP (programs only), LEAPSPR (+ REINFORCE), LEAPSPL (+ executor)."""
    data: Annotated[Path | None, InputPath()] = None
    """Dataset folder (data.hdf5 + id.txt) of `leaps-karel generate-dataset` or the original's;
    default $COMPKIT_DATA_DIR/karel-programs, else ~/.cache/compkit/karel-programs."""
    epochs: AtLeast1 = 150
    batch_size: AtLeast1 = 256
    lr: Positive = 1e-3
    """Adam learning rate of the supervised loss."""
    lr_step_epochs: AtLeast1 = 10
    lr_gamma: Annotated[float, Range(0, 1, lo_open=True)] = 0.95
    kl_coef: NonNegative = 0.1
    """β, weight of the KL term (all released commands: 0.1)."""
    max_program_tokens: Annotated[int, Range(5, 45)] = 44
    """Longest program kept, DEF included (the original keeps fewer than 45)."""
    rl_threshold: Annotated[float, Range(0, 1)] = 0.8
    """Validation greedy program accuracy that switches the REINFORCE phase on."""
    rl_batch: AtLeast1 = 512
    """Programs per REINFORCE update (8 steps × 64 processes in the original)."""
    rl_minibatches: AtLeast1 = 2
    rl_lr: Positive = 5e-4
    """Adam learning rate of the REINFORCE phase (linear decay to 0 over --rl-decay-updates)."""
    rl_decay_updates: AtLeast1 = 19_531
    rl_clip: Positive = 0.5
    rl_entropy_coef: NonNegative = 0.1
    rl_kl_coef: NonNegative = 0.1
    rl_wall_prob: Annotated[float, Range(0, 1, hi_open=True)] = 0.25
    """Wall probability of the fresh worlds the reward regenerates demos on."""
    rl_updates_per_epoch: Annotated[int | None, Range(1)] = None
    """Cap on REINFORCE updates per epoch (default: one pass over the training set)."""
    rl_workers: AtLeast1 = 1
    """Processes computing the L^R rewards (the result does not depend on it)."""
    rl_resample_z: bool = True
    """[quirk] Evaluate log p(ρ̂|z′) under a freshly sampled z′ (the original), not the z
    that produced ρ̂."""
    val_limit: Annotated[int | None, Range(1)] = None
    """Evaluate on at most this many validation (and training-metric) programs."""
    export: Path | None = None
    """Also write the best model's encoder + decoder weights (no executor) to this file."""
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    seed: Annotated[int, Range(0)] = 123
    """Seed of the split, initialisation, sampling and fresh worlds (the original used 123)."""
    threads: Annotated[int | None, Range(1)] = None
    device: DeviceName = "auto"
    runs_dir: Annotated[Path | None, OutputDir()] = None
    """Runs root (default: $RUNS_DIR, else ./runs); the run goes to <runs-dir>/leaps-karel/."""
    run_name: str | None = None
    resume: bool = False
    """Continue the run named by --run-name (else the newest pretrain run with a last.pt)."""
    tensorboard: bool = True
    """Also write TensorBoard event files."""
    progress: bool = True
    """Show progress bars (hidden when stderr is not a terminal)."""
    smoke: bool = False
    """Seconds-long run on a tiny in-memory dataset (unless --data is given) and a small model."""

    def check(self) -> None:
        """The executor CNN needs at least a 5×5 grid."""
        if self.export is not None and self.export.suffix != ".safetensors":
            raise UserError(f"--export must name a .safetensors file, got {self.export}")
        if min(self.model.executor_hw) < 5:
            raise UserError("--model.executor-hw must be at least 5 5 (two 3×3 convolutions)")

    @classmethod
    def smoke_defaults(cls) -> Self:
        """A seconds-long run: tiny model, two epochs, a forced REINFORCE phase."""
        return cls(
            smoke=True,
            epochs=2,
            batch_size=16,
            rl_batch=16,
            rl_threshold=0.0,
            rl_updates_per_epoch=1,
            tensorboard=False,
            model=ModelConfig(hidden=16, executor_steps=20),
        )
