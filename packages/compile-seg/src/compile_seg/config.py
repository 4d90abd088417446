"""Configuration of every `compile-seg` command as frozen dataclasses.

The defaults are those of the original toy implementation. The original's command-line
flags keep their names (``--iterations``, ``--learning-rate``, ``--hidden-dim``,
``--latent-dim``, ``--latent-dist``, ``--batch-size``, ``--num-symbols``,
``--num-segments``, ``--log-interval``): the ``data``, ``model`` and ``optim`` groups are
flattened on the command line. Options the original does not expose keep a dotted prefix
(``--loss.beta-b``, ``--log.tensorboard``).

This module imports no torch, so ``compile-seg --help`` stays instant.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

import tyro

DeviceName = Literal["auto", "cpu", "cuda", "mps"]
LatentDist = Literal["gaussian", "concrete"]
BoundaryPrior = Literal["first", "per-boundary"]


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Toy data generator: M runs of distinct repeated symbols followed by EOS."""

    batch_size: int = 512
    """B: fresh sequences generated for every training step."""
    num_symbols: int = 5
    """S: symbols are 1..S; 0 is EOS and padding (vocabulary V = S + 1)."""
    num_segments: int = 3
    """M: segments per sequence; also the model's number of segments."""
    max_segment_len: int = 5
    """Exclusive upper bound of a segment's length (lengths are 1..max_segment_len-1)."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """CompILE model sizes and options."""

    hidden_dim: int = 64
    """H: embedding and LSTM size."""
    latent_dim: int = 32
    """D: latent size (Gaussian dimensions or concrete categories)."""
    latent_dist: LatentDist = "gaussian"
    """Latent distribution of each segment's z."""
    temp_b: float = 1.0
    """tau_b: Gumbel-softmax temperature of the boundaries."""
    temp_z: float = 1.0
    """tau_z: temperature of concrete latents."""
    mask_padding: bool = False
    """Improvement (off = original): forbid boundaries on padding (positions >= length)."""


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Loss weights and priors (the original hard-codes these values)."""

    beta_b: float = 0.1
    """Weight of the boundary KL term."""
    beta_z: float = 0.1
    """Weight of the latent KL term."""
    prior_rate: float = 3.0
    """lambda: rate of the Poisson segment-length prior."""
    boundary_prior: BoundaryPrior = "first"
    """first = original (first boundary only, times M); per-boundary = every length."""


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Adam optimiser (no schedule, no clipping, no weight decay, as in the original)."""

    learning_rate: float = 1e-2
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

    iterations: int = 100
    """Number of training steps (one fresh batch each)."""
    log_interval: int = 5
    """Evaluate and print every N steps (and at step 0); never changes the trajectory."""
    seed: int = 0
    """Seeds Python, NumPy and torch; a seeded CPU run is reproducible exactly."""
    device: DeviceName = "auto"
    """auto = CUDA if available, else CPU."""
    threads: int | None = None
    """CPU threads for torch (default: $OMP_NUM_THREADS, else one per idle core)."""
    runs_dir: Path | None = None
    """Runs root (default: $RUNS_DIR, else ./runs); the run goes to <runs-dir>/compile-seg/."""
    run_name: str | None = None
    """Run directory name (default train__<seed>__<UTC time>); needed to --resume a run."""
    resume: bool = False
    """Continue the run --run-name (default: the newest train run) from checkpoints/last.pt."""
    smoke: bool = False
    """Tiny, seconds-long run of the full code path (batch 16, 6 steps, small model)."""
    checkpoint_every: int = 50
    """Save checkpoints/step_XXXXXX.pt and last.pt every N steps (and at the end)."""
    heldout_size: int = 512
    """Size of the held-out batch (fixed per seed) evaluated at every logged step."""
    data: Annotated[DataConfig, Flat] = dataclasses.field(default_factory=DataConfig)
    model: Annotated[ModelConfig, Flat] = dataclasses.field(default_factory=ModelConfig)
    optim: Annotated[OptimConfig, Flat] = dataclasses.field(default_factory=OptimConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    log: LogConfig = dataclasses.field(default_factory=LogConfig)


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """Evaluate a trained checkpoint on fresh data and draw a segmentation figure."""

    checkpoint: Path | None = None
    """A checkpoints/*.pt file or a train run directory (uses its checkpoints/last.pt)."""
    num_samples: int = 2048
    """Fresh sequences to evaluate on."""
    num_figure: int = 6
    """Sequences shown in segmentation.png."""
    seed: int = 0
    """Seed of the fresh evaluation data."""
    device: DeviceName = "auto"
    """auto = CUDA if available, else CPU."""
    threads: int | None = None
    """CPU threads for torch (default: $OMP_NUM_THREADS, else one per idle core)."""
    runs_dir: Path | None = None
    """Runs root (default: $RUNS_DIR, else ./runs)."""
    run_name: str | None = None
    """Run directory name (default evaluate__<seed>__<UTC time>)."""
    smoke: bool = False
    """Without --checkpoint: evaluate the newest smoke run in the runs root, training one
    first if there is none; uses 64 samples."""


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Time a training step and an evaluation against a reference implementation."""

    repeats: int = 20
    """Timed repetitions of each measurement (the median is reported)."""
    warmup: int = 3
    """Untimed repetitions first."""
    batch_size: int = 512
    """Batch size (the default configuration's)."""
    latent_dist: LatentDist = "gaussian"
    """Latent distribution of the timed model."""
    threads: int | None = None
    """CPU threads for torch (default: $OMP_NUM_THREADS, else one per idle core)."""
    device: DeviceName = "cpu"
    """Device of the timed models (the published figures are CPU figures)."""
    seed: int = 0
    """Seed of the models and data."""
    skip_reference: bool = False
    """Time only this implementation (no baseline, no ratios)."""
    kernels: Literal["auto", "torch", "native"] = "auto"
    """Encoder LSTM kernels: the compiled native ones when available (auto), the PyTorch
    path, or native only (error if they cannot be built)."""
    contended: bool = False
    """Also time this implementation beside one busy process, at the default thread count
    and at 1 thread, and print the ratio default/1 thread."""


def smoke_train_config(cfg: TrainConfig) -> TrainConfig:
    """The tiny configuration used by ``train --smoke`` (keeps seed, dirs and options)."""
    return dataclasses.replace(
        cfg,
        iterations=min(cfg.iterations, 6),
        log_interval=2,
        checkpoint_every=3,
        heldout_size=32,
        data=dataclasses.replace(cfg.data, batch_size=16),
        model=dataclasses.replace(cfg.model, hidden_dim=16, latent_dim=8),
    )


def validate_train_config(cfg: TrainConfig) -> None:
    """Reject impossible values with a one-line message naming the flag.

    Raises:
        UserError: a size, interval or weight is out of range.
    """
    from compkit_utils.errors import UserError

    checks = [
        (cfg.iterations >= 1, "--iterations must be at least 1"),
        (cfg.log_interval >= 1, "--log-interval must be at least 1"),
        (cfg.checkpoint_every >= 1, "--checkpoint-every must be at least 1"),
        (cfg.heldout_size >= 1, "--heldout-size must be at least 1"),
        (cfg.data.batch_size >= 1, "--batch-size must be at least 1"),
        (cfg.data.num_segments >= 1, "--num-segments must be at least 1"),
        (
            cfg.data.num_symbols >= cfg.data.num_segments,
            "--num-symbols must be at least --num-segments (symbols are distinct per sequence)",
        ),
        (cfg.data.max_segment_len >= 2, "--max-segment-len must be at least 2 (lengths 1..N-1)"),
        (cfg.model.hidden_dim >= 1, "--hidden-dim must be at least 1"),
        (cfg.model.latent_dim >= 1, "--latent-dim must be at least 1"),
        (cfg.model.temp_b > 0 and cfg.model.temp_z > 0, "--temp-b and --temp-z must be > 0"),
        (cfg.optim.learning_rate > 0, "--learning-rate must be > 0"),
        (cfg.loss.prior_rate > 0, "--loss.prior-rate must be > 0"),
        (cfg.loss.beta_b >= 0 and cfg.loss.beta_z >= 0, "--loss.beta-b/-z must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
