"""Configuration of ``train-planner`` (no torch import here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal, Self

from compkit_utils.devices import DeviceName
from compkit_utils.errors import UserError
from compkit_utils.validate import InputPath, OutputDir, Range
from factored_attention_babyai.disc_config import InteractionModelName

__all__ = ["PlannerConfig"]


@dataclasses.dataclass(frozen=True)
class PlannerConfig:
    """Train the MVProp planner on the demonstrations (spec §5).

    The frozen interaction module's goal map → MVProp value propagation → Q-value CNN, by
    Monte-Carlo Q regression plus a CQL-style penalty; validated by greedy rollouts on the ID
    and OOD seeds.
    """

    interaction: Annotated[Path | None, InputPath()] = None
    """Interaction checkpoint: the interaction.pt of a train-discriminator run, its run folder,
    any of its checkpoints (post-processed on load), or a compkit sweep folder of
    train-discriminator (the run with this run's --per-goal and --seed). Required unless
    --smoke (which then uses an untrained interaction model: a pipeline check only)."""
    interaction_model: InteractionModelName = "independent"
    """The interaction model the checkpoint must hold (the paper's planner: independent)."""
    k: Annotated[int, Range(0)] = 10
    """MVProp iterations (0 = the "Factored/CNN policy" ablation: no value propagation)."""
    data: Annotated[Path | None, InputPath()] = None
    """The dataset of `generate` (its folder or data.hdf5); required unless --smoke."""
    per_goal: Annotated[int | None, Range(1)] = None
    """Training demonstrations per goal (default: all but the --vlimit ID-validation ones)."""
    vlimit: Annotated[int, Range(1)] = 20
    """ID-validation demonstrations per training goal (their seeds are rolled out)."""
    tlimit: Annotated[int, Range(1)] = 40
    """OOD demonstrations per held-out goal (their seeds are rolled out)."""
    steps: Annotated[int, Range(1)] = 70_000
    """Optimizer steps (the paper: 70,000). With --resume it may be raised: the run goes on
    exactly as if started with the new count (constant learning rate)."""
    batch_size: Annotated[int, Range(1)] = 32
    """Demonstrations per step (all their frames are independent samples)."""
    lr: Annotated[float, Range(0, None, lo_open=True)] = 1e-3
    """Adam learning rate (MVProp and Q-network only; the interaction model is frozen)."""
    gamma: Annotated[float, Range(0, 1, lo_open=True)] = 0.9
    """Discount of the Monte-Carlo targets G_t = γ^(T−1−t) (the dataset's returns)."""
    reg_weight: Annotated[float, Range(0)] = 0.01
    """Weight of the CQL-style penalty (Q of non-demonstrated actions → 0) and of mean V²."""
    precision: Literal["32", "mixed"] = "32"
    """32: float32; mixed: the forward pass under autocast, float16 with loss scaling on CUDA
    (the original's 16-bit planner training), bfloat16 on a CPU (a faster step where the CPU
    has bfloat16 instructions). Validation rollouts run in float32."""
    eval_every: Annotated[int, Range(1)] = 500
    """Validation rollouts (ID and OOD seeds) and a checkpoint every N steps (and at the end)."""
    eval_batch: Annotated[int, Range(1)] = 512
    """Environments stepped together during validation."""
    top_k: Annotated[int, Range(1)] = 5
    """Keep the best N checkpoints by ID success (checkpoints/best/)."""
    seed: Annotated[int, Range(0)] = 0
    threads: Annotated[int | None, Range(1)] = None
    """CPU threads for torch (default: $OMP_NUM_THREADS, else one per idle core)."""
    device: DeviceName = "auto"
    runs_dir: Annotated[Path | None, OutputDir()] = None
    """Runs root (default: $RUNS_DIR, else ./runs)."""
    run_name: str | None = None
    resume: bool = False
    """Continue the run named by --run-name (else the newest train-planner run with a last.pt)."""
    tensorboard: bool = False
    """Also write TensorBoard event files."""
    smoke: bool = False
    """Seconds-long run; without --data, a few bot demonstrations made on the spot."""

    def check(self) -> None:
        """--data and --interaction are needed outside --smoke."""
        if self.data is None and not self.smoke:
            raise UserError(
                "--data is required: the dataset folder (or data.hdf5) written by "
                "`factored-attention-babyai generate` (or pass --smoke)"
            )
        if self.interaction is None and not self.smoke:
            raise UserError(
                "--interaction is required: the interaction.pt (or run folder) of "
                "`factored-attention-babyai train-discriminator` (or pass --smoke)"
            )

    @classmethod
    def smoke_defaults(cls) -> Self:
        """The defaults of ``train-planner --smoke``."""
        return cls(
            smoke=True, steps=4, eval_every=2, vlimit=1, tlimit=1, batch_size=4, device="cpu"
        )
