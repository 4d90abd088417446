"""``rim-cells minigrid train|evaluate|visualize`` (no torch import at module level)."""

from __future__ import annotations

from typing import Any

from compkit_utils.config import run_cli
from rim_cells.minigrid.config import EvaluateConfig, TrainConfig, VisualizeConfig

COMMANDS: dict[str, type] = {
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "visualize": VisualizeConfig,
}


def _dispatch(cfg: Any) -> int:
    from compkit_utils.logging import configure_logging

    configure_logging()
    match cfg:
        case TrainConfig():
            from rim_cells.minigrid.train import train

            print(f"run directory: {train(cfg)}")
        case EvaluateConfig():
            from rim_cells.minigrid.evaluate import evaluate

            evaluate(cfg)
        case VisualizeConfig():
            from rim_cells.minigrid.visualize import visualize

            visualize(cfg)
        case _:
            raise AssertionError(f"unhandled command config: {cfg!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rim-cells minigrid``; ``argv`` excludes the ``minigrid`` word."""
    return run_cli(
        COMMANDS,
        _dispatch,
        argv,
        prog="rim-cells minigrid",
        description="Recurrent PPO with RIM or LSTM memory on MiniGrid (train, evaluate, GIFs).",
    )
