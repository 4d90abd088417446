"""Configuration of ``train-bc`` and ``bench`` (behaviour-cloning baselines, spec §6).

Markers on every field, ``check`` for cross-field rules, ``smoke_defaults`` for ``--smoke``.
No torch import here, so ``factored-attention-babyai --help`` stays instant.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal, Self

from compkit_utils.devices import DeviceName
from compkit_utils.errors import UserError
from compkit_utils.validate import InputFile, InputPath, OutputDir, Range

__all__ = ["PAPER_STEPS", "BcBenchConfig", "BcConfig"]

PAPER_STEPS = {"film": 70_000, "transformer": 120_000}
"""Iterations of the paper's runs (§6.1, §6.2)."""

AtLeast1 = Annotated[int, Range(1)]
Positive = Annotated[float, Range(0, None, lo_open=True)]


@dataclasses.dataclass(frozen=True)
class BcConfig:
    """Train a behaviour-cloning baseline (FiLM/GRU or encoder–decoder Transformer)."""

    model: Literal["film", "transformer"] = "film"
    """film: the FiLM/GRU policy (§6.1, Adam 1e-3 constant); transformer: the encoder–decoder
    Transformer (§6.2, AdamW 1e-3, 14% warm-up then 10^(−2·progress))."""
    data: Annotated[Path | None, InputPath()] = None
    """The dataset of `generate` (its folder or data.hdf5)."""
    per_goal: Annotated[int | None, Range(1)] = None
    """Training demos per ID goal (the first N of each goal; the paper's limits 50 ... 9980;
    default: all but the ID-validation tail)."""
    vlimit: AtLeast1 = 20
    """ID-validation demos per goal: the last vlimit of each ID goal (24 × 20 = 480)."""
    tlimit: AtLeast1 = 40
    """OOD-validation demos per held-out goal: the first tlimit (12 × 40 = 480)."""
    steps: Annotated[int | None, Range(1)] = None
    """Optimizer steps (default: the paper's, 70,000 film / 120,000 transformer)."""
    batch_size: AtLeast1 = 32
    """Demonstrations per batch (all their frames are trained on)."""
    lr: Positive = 1e-3
    warmup: Annotated[float, Range(0, 1, hi_open=True)] = 0.14
    """Transformer only: fraction of the run with a linear warm-up."""
    decay: bool = True
    """Transformer only: after the warm-up the rate decays as 10^(−2·progress) (the paper's,
    0.01× at the end). --no-decay keeps it constant: for runs far shorter than the paper's
    120,000 steps, where the decayed rate leaves the Transformer at the marginal action
    distribution (measured, docs: baselines)."""
    precision: Literal["32", "mixed"] = "32"
    """32: float32; mixed: autocast, float16 + loss scaling on CUDA (the original's 16-bit
    training), bfloat16 on a CPU."""
    padding_frames: bool = True
    """Pass each demo's zero padding frames (up to Tmax) through the policy, as the original
    does: they enter FiLM's batch-norm statistics (≈ 65% of a batch's frames at Tmax 26) and
    the entropy term. --no-padding-frames trains on the valid frames only (not the paper's
    setting; FiLM then leaves the marginal-action plateau several hundred steps earlier)."""
    eval_every: AtLeast1 = 500
    """Validation rollouts (ID and OOD seeds) and a checkpoint every N steps (and at the end)."""
    eval_batch: AtLeast1 = 512
    """Environments stepped together during validation."""
    top_k: AtLeast1 = 5
    """Checkpoints kept by ID success (checkpoints/best/, best_k_models.yaml)."""
    seed: Annotated[int, Range(0)] = 0
    threads: Annotated[int | None, Range(1)] = None
    """CPU threads for torch (default: $OMP_NUM_THREADS, else one per idle core)."""
    device: DeviceName = "auto"
    runs_dir: Annotated[Path | None, OutputDir()] = None
    """Runs root (default: $RUNS_DIR, else ./runs); the run goes to
    <runs-dir>/factored-attention-babyai/."""
    run_name: str | None = None
    resume: bool = False
    """Continue the run named by --run-name (else the newest train-bc run with a last.pt)."""
    tensorboard: bool = False
    """Also write TensorBoard event files."""
    smoke: bool = False
    """Seconds-long run; without --data, a few bot demonstrations made on the spot."""

    @property
    def total_steps(self) -> int:
        """``--steps`` or the paper's count for ``--model``."""
        return self.steps if self.steps is not None else PAPER_STEPS[self.model]

    def check(self) -> None:
        """--data is needed outside --smoke."""
        if self.data is None and not self.smoke:
            raise UserError(
                "--data is required: the dataset folder (or data.hdf5) written by "
                "`factored-attention-babyai generate`"
            )

    @classmethod
    def smoke_defaults(cls) -> Self:
        """The defaults of ``train-bc --smoke``."""
        return cls(smoke=True, steps=4, eval_every=2, vlimit=1, tlimit=1, batch_size=4)


@dataclasses.dataclass(frozen=True)
class BcBenchConfig:
    """Time the vectorised evaluator (vs one env at a time), BC steps and generation."""

    episodes: AtLeast1 = 96
    """Episodes of the evaluator comparison (same seeds for both)."""
    steps: AtLeast1 = 20
    """Timed BC training steps per model."""
    batch_size: AtLeast1 = 32
    """Demonstrations per timed BC step (the paper's 32)."""
    models: tuple[Literal["film", "transformer"], ...] = ("film", "transformer")
    generation: bool = True
    """Also time dataset generation (demos/s, projected full-dataset time)."""
    contended: bool = False
    """Repeat the measurements beside a busy process (compkit_utils.devices.busy_process)."""
    checkpoints: Annotated[tuple[Path, ...], InputFile()] = ()
    """Also time the evaluator with these trained policies (``model.pt`` or any checkpoint of
    train-bc or train-planner) on the same seeds: a trained policy loops less than a fresh one,
    so the cycle cut saves less (see the docs)."""
    threads: Annotated[int | None, Range(1)] = None
    seed: Annotated[int, Range(0)] = 0
    smoke: bool = False

    @classmethod
    def smoke_defaults(cls) -> Self:
        """The defaults of ``bench --smoke``."""
        return cls(smoke=True, episodes=2, steps=2, batch_size=4, generation=False)


GRID_SIZES = (50, 250, 1000)
"""Demonstrations per goal of the CPU grid."""
PAPER_SIZES = (50, 100, 250, 500, 1000, 2500, 5000, 9980)
"""Demonstrations per goal of the paper's grid (§8.1)."""


@dataclasses.dataclass(frozen=True)
class BcGridConfig:
    """Both baselines over data sizes × seeds through `compkit sweep`, then the tables."""

    data: Annotated[Path | None, InputPath()] = None
    """The dataset of `generate` (at least max(--per-goal) + 20 demos per goal)."""
    per_goal: tuple[int, ...] = GRID_SIZES
    """Demos per goal of the grid (the paper's: 50 100 250 500 1000 2500 5000 9980)."""
    models: tuple[Literal["film", "transformer"], ...] = ("film", "transformer")
    seeds: str = "0-2"
    """Seeds of every grid point (0-9 for the paper's grid)."""
    steps: Annotated[int | None, Range(1)] = 400
    """Optimizer steps of every run (None: the paper's 70,000 / 120,000)."""
    eval_every: AtLeast1 = 200
    vlimit: AtLeast1 = 20
    tlimit: AtLeast1 = 40
    workers: AtLeast1 = 1
    """Runs in parallel (local process pool)."""
    name: str = "bc-grid"
    """Sweep name: <runs-dir>/factored-attention-babyai/sweeps/<name>/."""
    device: DeviceName = "auto"
    runs_dir: Annotated[Path | None, OutputDir()] = None
    smoke: bool = False
    """Seconds-long grid (bot demos made on the spot, 1 seed, 2 steps)."""

    def check(self) -> None:
        """--data outside --smoke; sizes at least 1."""
        if self.data is None and not self.smoke:
            raise UserError("--data is required: the dataset folder written by `generate`")
        if not self.per_goal or min(self.per_goal) < 1:
            raise UserError("--per-goal needs one or more sizes, each at least 1")
        if not self.models:
            raise UserError("--models needs film, transformer or both")
        from compkit_utils.sweep.grid import parse_seeds

        parse_seeds(self.seeds)

    @classmethod
    def smoke_defaults(cls) -> Self:
        """The defaults of ``bc-grid --smoke``."""
        return cls(smoke=True, seeds="0", steps=2, eval_every=2, vlimit=1, tlimit=1, per_goal=(4,))
