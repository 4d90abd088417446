"""Configuration of ``figures`` (no torch import here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

from compkit_utils.errors import UserError
from compkit_utils.validate import OutputDir, Range

__all__ = ["FiguresConfig"]


@dataclasses.dataclass(frozen=True)
class FiguresConfig:
    """Draw the paper's Figure 3 (success vs demos per goal) and Figure 4a/4b (goal maps).

    Figure 3 reads compkit sweeps of train-planner / train-bc over --per-goal; Figure 4b reads
    interaction checkpoints of train-discriminator (4b: the attention models only).
    """

    sweeps: tuple[str, ...] = ()
    """Figure 3 curves as LABEL=SWEEP_DIR (repeat a label to pool several sweeps), e.g.
    "Factored/MVProp=runs/factored-attention-babyai/sweeps/train-planner"."""
    interactions: tuple[str, ...] = ()
    """Figure 4 models as LABEL=CHECKPOINT (an interaction.pt or train-discriminator run
    folder; repeat a label to average several seeds)."""
    example_seeds: tuple[int, ...] = ()
    """Figure 4a example rooms (reset seeds; default one ID and one held-out goal's room)."""
    out_dir: Annotated[Path, OutputDir()] = Path("figures")
    """Where the figure files (figure3_*.png, figure4a.png, figure4b.png, their JSON) go."""
    max_step: Annotated[int, Range(1)] = 70_000
    """Figure 3 uses validation points logged at steps ≤ this."""
    top: Annotated[int, Range(1)] = 10
    """Validation points kept per run: the best by ID success (spec §8.2)."""
    reps: Annotated[int, Range(100)] = 50_000
    """Bootstrap repetitions of the 95% stratified-bootstrap CIs (rliable)."""
    seed: Annotated[int, Range(0)] = 0
    """Seed of the bootstrap."""
    overwrite: bool = False
    """Replace existing figure files in --out-dir."""

    def check(self) -> None:
        """At least one figure must be asked for; every item must be LABEL=PATH."""
        if not self.sweeps and not self.interactions:
            raise UserError(
                "pass --sweeps LABEL=DIR ... (Figure 3) and/or --interactions "
                "LABEL=CHECKPOINT ... (Figure 4b)"
            )
        for flag, items in (("--sweeps", self.sweeps), ("--interactions", self.interactions)):
            for item in items:
                label, sep, path = item.partition("=")
                if not sep or not label or not path:
                    raise UserError(f"{flag} {item!r}: expected LABEL=PATH")
