"""Runners of ``rim-cells minigrid train|evaluate|visualize`` (imported lazily by the CLI)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rim_cells.minigrid.config import (
        MiniGridEvaluateConfig,
        MiniGridTrainConfig,
        MiniGridVisualizeConfig,
    )


def run_train(cfg: MiniGridTrainConfig) -> None:
    """``rim-cells minigrid train``: train and print the run directory."""
    from rim_cells.minigrid.train import train

    print(f"run directory: {train(cfg)}")


def run_evaluate(cfg: MiniGridEvaluateConfig) -> None:
    """``rim-cells minigrid evaluate``: print the results table."""
    from rim_cells.minigrid.evaluate import evaluate

    evaluate(cfg)


def run_visualize(cfg: MiniGridVisualizeConfig) -> None:
    """``rim-cells minigrid visualize``: write the GIF."""
    from rim_cells.minigrid.visualize import visualize

    visualize(cfg)
