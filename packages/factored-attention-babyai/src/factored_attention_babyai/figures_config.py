"""Configuration of ``figures`` (no torch import here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

from compkit_utils.errors import UserError
from compkit_utils.validate import OutputDir, Range

__all__ = ["CURVE_NAMES", "FiguresConfig", "split_item"]

CURVE_NAMES = {
    "planner": "Factored/MVProp planner",
    "cnn": "Factored/CNN policy",
    "film": "GRU-Encoder ResNet/FiLM",
    "transformer": "Encoder-Decoder Transformer",
}
"""Figure 3 curve names (spec §8.1) of a run's model: ``train-bc --model`` or the planner
(``train-planner``, K > 0) and its K = 0 variant."""


def split_item(item: str, bare: bool) -> tuple[str, str]:
    """``LABEL=PATH`` → (label, path).

    With ``bare``, an existing folder or an item without ``=`` is a path with the empty label
    (the curves are then named after the runs' models).
    """
    if bare and ("=" not in item or Path(item).is_dir()):
        return "", item
    label, _, path = item.partition("=")
    return label, path


@dataclasses.dataclass(frozen=True)
class FiguresConfig:
    """Draw the paper's Figure 3 (success vs demos per goal) and Figure 4a/4b (goal maps).

    Figure 3 reads compkit sweeps of train-planner / train-bc over --per-goal; Figure 4b reads
    interaction checkpoints of train-discriminator (4b: the attention models only).
    """

    sweeps: tuple[str, ...] = ()
    """Figure 3 curves as LABEL=SWEEP_DIR (repeat a label to pool several sweeps), e.g.
    "Factored/MVProp=runs/factored-attention-babyai/sweeps/train-planner", or a bare SWEEP_DIR:
    one curve per model, named after it (the planner, its K=0 variant, FiLM, Transformer). A
    labelled sweep over several models (train-bc --grid model=film,transformer) is split into
    "LABEL: <model>" curves."""
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
        for item in self.sweeps:
            label, path = split_item(item, bare=True)
            if not path or (not label and path != item):  # "=PATH" or "LABEL="
                raise UserError(f"--sweeps {item!r}: expected LABEL=SWEEP_DIR or SWEEP_DIR")
        for item in self.interactions:
            label, path = split_item(item, bare=False)
            if not label or not path:
                raise UserError(f"--interactions {item!r}: expected LABEL=PATH")
