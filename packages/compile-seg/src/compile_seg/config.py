"""Configuration of every `compile-seg` command as frozen dataclasses.

The defaults are those of the original toy implementation. The original's command-line
flags keep their names (``--iterations``, ``--learning-rate``, ``--hidden-dim``,
``--latent-dim``, ``--latent-dist``, ``--batch-size``, ``--num-symbols``,
``--num-segments``, ``--log-interval``): the ``data``, ``model`` and ``optim`` groups are
flattened on the command line. Options the original does not expose keep a dotted prefix
(``--loss.beta-b``, ``--log.tensorboard``).

Every field declares its valid values with a :mod:`compkit_utils.validate` marker
(``Range``, ``OutputDir``, ``InputPath``) and cross-field rules live in ``check`` methods;
``compkit_utils.config.run_cli`` validates the parsed config before a command starts.
``--smoke`` only changes defaults (``smoke_defaults``), so explicit flags win.

This module imports no torch, so ``compile-seg --help`` stays instant.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal, Self

import tyro

from compkit_utils.devices import DeviceName
from compkit_utils.errors import UserError
from compkit_utils.validate import InputPath, OutputDir, Range

__all__ = [
    "BenchConfig",
    "BoundaryPrior",
    "DataConfig",
    "DeviceName",
    "EvaluateConfig",
    "LatentDist",
    "LogConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
]

AtLeast1 = Annotated[int, Range(1)]
Positive = Annotated[float, Range(0, None, lo_open=True)]
NonNegative = Annotated[float, Range(0)]
Seed = Annotated[int, Range(0)]
Threads = Annotated[int | None, Range(1)]
RunsDir = Annotated[Path | None, OutputDir()]
LatentDist = Literal["gaussian", "concrete"]
BoundaryPrior = Literal["first", "per-boundary"]


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Toy data generator: M runs of distinct repeated symbols followed by EOS."""

    batch_size: AtLeast1 = 512
    """B: fresh sequences generated for every training step."""
    num_symbols: AtLeast1 = 5
    """S: symbols are 1..S; 0 is EOS and padding (vocabulary V = S + 1)."""
    num_segments: AtLeast1 = 3
    """M: segments per sequence; also the model's number of segments."""
    max_segment_len: Annotated[int, Range(2)] = 5
    """Exclusive upper bound of a segment's length (lengths are 1..max_segment_len-1)."""

    def check(self) -> None:
        """Symbols are distinct within a sequence, so there must be enough of them."""
        if self.num_symbols < self.num_segments:
            raise UserError(
                f"--num-symbols ({self.num_symbols}) must be at least --num-segments "
                f"({self.num_segments}): the symbols of a sequence are distinct"
            )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """CompILE model sizes and options."""

    hidden_dim: AtLeast1 = 64
    """H: embedding and LSTM size."""
    latent_dim: AtLeast1 = 32
    """D: latent size (Gaussian dimensions or concrete categories)."""
    latent_dist: LatentDist = "gaussian"
    """Latent distribution of each segment's z."""
    temp_b: Positive = 1.0
    """tau_b: Gumbel-softmax temperature of the boundaries."""
    temp_z: Positive = 1.0
    """tau_z: temperature of concrete latents."""
    mask_padding: bool = False
    """Improvement (off = original): forbid boundaries on padding (positions >= length)."""


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Loss weights and priors (the original hard-codes these values)."""

    beta_b: NonNegative = 0.1
    """Weight of the boundary KL term."""
    beta_z: NonNegative = 0.1
    """Weight of the latent KL term."""
    prior_rate: Positive = 3.0
    """lambda: rate of the Poisson segment-length prior."""
    boundary_prior: BoundaryPrior = "first"
    """first = original (first boundary only, times M); per-boundary = every length."""


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Adam optimiser (no schedule, no clipping, no weight decay, as in the original)."""

    learning_rate: Positive = 1e-2
    """Adam learning rate (deliberately high; try 1e-3 if a seed is unstable)."""


@dataclasses.dataclass(frozen=True)
class LogConfig:
    """Optional metric sinks besides metrics.jsonl."""

    tensorboard: bool = False
    """Also write TensorBoard event files (needs the tensorboard extra)."""
    wandb: bool = False
    """Also log to Weights & Biases (needs the wandb extra)."""


Flat = tyro.conf.OmitArgPrefixes


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Train CompILE on freshly generated toy batches (defaults = the original's)."""

    iterations: AtLeast1 = 100
    """Number of training steps (one fresh batch each)."""
    log_interval: AtLeast1 = 5
    """Evaluate and print every N steps (and at step 0); never changes the trajectory."""
    seed: Seed = 0
    """Seeds Python, NumPy and torch; a seeded CPU run is reproducible exactly."""
    device: DeviceName = "auto"
    """auto = CUDA if available, else CPU."""
    threads: Threads = None
    """CPU threads for torch (default: $OMP_NUM_THREADS, else one per idle core)."""
    runs_dir: RunsDir = None
    """Runs root (default: $RUNS_DIR, else ./runs); the run goes to <runs-dir>/compile-seg/."""
    run_name: str | None = None
    """Run directory name (default train__<seed>__<UTC time>); needed to --resume a run."""
    resume: bool = False
    """Continue the run --run-name (default: the newest train run) from checkpoints/last.pt."""
    smoke: bool = False
    """Tiny, seconds-long run of the full code path: batch 16, 6 steps, small model
    (these become the defaults; explicit flags still win)."""
    checkpoint_every: AtLeast1 = 50
    """Save checkpoints/step_XXXXXX.pt and last.pt every N steps (and at the end)."""
    heldout_size: AtLeast1 = 512
    """Size of the held-out batch (fixed per seed) evaluated at every logged step."""
    data: Annotated[DataConfig, Flat] = dataclasses.field(default_factory=DataConfig)
    model: Annotated[ModelConfig, Flat] = dataclasses.field(default_factory=ModelConfig)
    optim: Annotated[OptimConfig, Flat] = dataclasses.field(default_factory=OptimConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    log: LogConfig = dataclasses.field(default_factory=LogConfig)

    @classmethod
    def smoke_defaults(cls) -> Self:
        """The defaults of ``train --smoke``: seconds-long, every code path."""
        return cls(
            smoke=True,
            iterations=6,
            log_interval=2,
            checkpoint_every=3,
            heldout_size=32,
            data=DataConfig(batch_size=16),
            model=ModelConfig(hidden_dim=16, latent_dim=8),
        )


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """Evaluate a trained checkpoint on fresh data and draw a segmentation figure."""

    checkpoint: Annotated[Path | None, InputPath()] = None
    """A checkpoints/*.pt file or a train run directory (uses its checkpoints/last.pt)."""
    num_samples: AtLeast1 = 2048
    """Fresh sequences to evaluate on."""
    num_figure: Annotated[int, Range(0)] = 6
    """Sequences shown in segmentation.png."""
    seed: Seed = 0
    """Seed of the fresh evaluation data."""
    device: DeviceName = "auto"
    """auto = CUDA if available, else CPU."""
    threads: Threads = None
    """CPU threads for torch (default: $OMP_NUM_THREADS, else one per idle core)."""
    runs_dir: RunsDir = None
    """Runs root (default: $RUNS_DIR, else ./runs)."""
    run_name: str | None = None
    """Run directory name (default evaluate__<seed>__<UTC time>)."""
    smoke: bool = False
    """Without --checkpoint: evaluate the newest smoke run in the runs root, training one
    first if there is none; 64 samples by default."""

    def check(self) -> None:
        """A checkpoint is needed unless --smoke finds (or trains) one."""
        if self.checkpoint is None and not self.smoke:
            raise UserError(
                "pass --checkpoint PATH (a train run's checkpoints/last.pt or its run directory)"
            )

    @classmethod
    def smoke_defaults(cls) -> Self:
        """The defaults of ``evaluate --smoke``: 64 fresh sequences."""
        return cls(smoke=True, num_samples=64)


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Time a training step and an evaluation against a reference implementation."""

    repeats: AtLeast1 = 20
    """Timed repetitions of each measurement (the median is reported)."""
    warmup: Annotated[int, Range(0)] = 3
    """Untimed repetitions first."""
    batch_size: AtLeast1 = 512
    """Batch size (the default configuration's)."""
    latent_dist: LatentDist = "gaussian"
    """Latent distribution of the timed model."""
    threads: Threads = None
    """CPU threads for torch (default: $OMP_NUM_THREADS, else one per idle core)."""
    device: DeviceName = "cpu"
    """Device of the timed models (the published figures are CPU figures)."""
    seed: Seed = 0
    """Seed of the models and data."""
    skip_reference: bool = False
    """Time only this implementation (no baseline, no ratios)."""
    kernels: Literal["auto", "torch", "native"] = "auto"
    """Encoder LSTM kernels: the compiled native ones when available (auto), the PyTorch
    path, or native only (error if they cannot be built)."""
    contended: bool = False
    """Also time this implementation beside one busy process, at the default thread count
    and at 1 thread, and print the ratio default/1 thread."""
