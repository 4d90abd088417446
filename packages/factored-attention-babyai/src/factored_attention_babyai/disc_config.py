"""Configuration of ``train-discriminator`` and ``export-interaction`` (no torch import here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Self

from compkit_utils.devices import DeviceName
from compkit_utils.errors import UserError
from compkit_utils.validate import Choice, InputPath, OutputDir, Range

__all__ = ["DiscriminatorConfig", "ExportInteractionConfig"]

INTERACTION_MODELS = (
    "independent",
    "independent_noreg",
    "simple",
    "simple_noreg",
    "transformer",
    "film",
)
"""Interaction models (same list as ``models.interaction.MODEL_NAMES``, kept torch-free)."""
InteractionModelName = Annotated[str, Choice(*INTERACTION_MODELS)]


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
    """Train a goal discriminator (interaction model + masking module) without goal labels.

    Spec §4. Writes checkpoints, the top-k by ID soft F1, and the planner-ready
    interaction.pt (final weights) and interaction_best.pt.
    """

    model: InteractionModelName = "independent"
    """Interaction model: independent (sparse factored attention), independent_noreg, simple,
    simple_noreg, transformer, film."""
    data: Annotated[Path | None, InputPath()] = None
    """The dataset of `generate` (its folder or data.hdf5); required unless --smoke."""
    per_goal: Annotated[int | None, Range(2)] = None
    """Demonstrations per training goal (the first ones of each goal, spec §2.6; default: all
    but the --vlimit ID-validation ones). The paper's grid: 10, 50, ..., 9980."""
    vlimit: Annotated[int, Range(1)] = 20
    """ID-validation demonstrations per training goal (the last ones of each goal)."""
    tlimit: Annotated[int, Range(1)] = 40
    """OOD demonstrations per held-out goal."""
    steps: Annotated[int, Range(1)] = 200_000
    """Optimizer steps (the paper's runs: 200,000)."""
    batch_size: Annotated[int, Range(2)] = 1024
    """Pair items per step (half positives, half negatives); must be even."""
    lr: Annotated[float, Range(0, None, lo_open=True)] = 1e-4
    """Adam learning rate (transformer: with 2,000-step warm-up and 10^(−2·progress) decay)."""
    l1_start: Annotated[int, Range(0)] = 1000
    """Last step with sparsity weight λ = 0 (independent, simple)."""
    l1_end: Annotated[int, Range(0)] = 6000
    """Step at which λ reaches --l1-final (linear in between)."""
    l1_final: Annotated[float, Range(0)] = 1.0
    """Final sparsity weight λ."""
    val_every: Annotated[int, Range(1)] = 20
    """Validate on the ID and OOD initial frames every N steps."""
    top_k: Annotated[int, Range(1)] = 5
    """Keep the best N checkpoints by ID soft F1 (checkpoints/best/)."""
    checkpoint_every: Annotated[int, Range(1)] = 1000
    """Write checkpoints/step_<n>.pt and last.pt every N steps."""
    seed: Annotated[int, Range(0)] = 0
    threads: Annotated[int | None, Range(1)] = None
    """CPU threads for torch (default: $OMP_NUM_THREADS, else one per idle core)."""
    device: DeviceName = "auto"
    runs_dir: Annotated[Path | None, OutputDir()] = None
    """Runs root (default: $RUNS_DIR, else ./runs)."""
    run_name: str | None = None
    resume: bool = False
    """Continue the run named by --run-name (else the newest train-discriminator run with a
    last.pt)."""
    tensorboard: bool = False
    """Also write TensorBoard event files."""
    smoke: bool = False
    """Seconds-long run; without --data, a few bot demonstrations made on the spot."""

    def check(self) -> None:
        if self.batch_size % 2:
            raise UserError(f"--batch-size must be even (pairs), got {self.batch_size}")
        if self.l1_end < self.l1_start:
            raise UserError(
                f"--l1-end ({self.l1_end}) must be at least --l1-start ({self.l1_start})"
            )
        if self.data is None and not self.smoke:
            raise UserError(
                "--data is required: the dataset folder (or data.hdf5) written by "
                "`factored-attention-babyai generate` (or pass --smoke)"
            )

    @classmethod
    def smoke_defaults(cls) -> Self:
        """``--smoke``: a few small steps on 3 demos per goal."""
        return cls(
            smoke=True,
            vlimit=1,
            tlimit=1,
            steps=4,
            batch_size=16,
            val_every=2,
            checkpoint_every=2,
            device="cpu",
        )


@dataclasses.dataclass(frozen=True)
class ExportInteractionConfig:
    """Post-process a discriminator checkpoint into the interaction checkpoint of the planner.

    Keeps the interaction model's weights only (no masking module, no optimizer).
    """

    checkpoint: Annotated[Path, InputPath()]
    """A train-discriminator checkpoint (last.pt, step_*.pt, best/*.pt) or its run folder."""
    out: Path | None = None
    """Output file (default: <checkpoint stem>.interaction.pt next to it)."""
    overwrite: bool = False
    """Replace an existing --out."""
