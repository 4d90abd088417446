"""Command line of ``factored-attention-babyai``.

Commands are registered in two tables (one line each): :data:`COMMANDS` maps a command name
to its config dataclass (defined in a module that does not import torch) and :data:`TARGETS`
maps the config class to ``"module:function"``, imported only when the command runs, so
``factored-attention-babyai --help`` does not import torch, gymnasium or minigrid.
"""

from __future__ import annotations

import importlib
from typing import Any

from compkit_utils.config import run_cli
from factored_attention_babyai.bc_config import BcBenchConfig, BcConfig, BcGridConfig
from factored_attention_babyai.config import GenerateConfig, InspectConfig
from factored_attention_babyai.disc_config import DiscriminatorConfig, ExportInteractionConfig
from factored_attention_babyai.experiment_config import ExperimentConfig
from factored_attention_babyai.figures_config import FiguresConfig
from factored_attention_babyai.planner_config import PlannerConfig

COMMANDS: dict[str, type] = {
    "generate": GenerateConfig,
    "inspect": InspectConfig,
    "train-bc": BcConfig,
    "bench": BcBenchConfig,
    "bc-grid": BcGridConfig,
    "train-discriminator": DiscriminatorConfig,
    "export-interaction": ExportInteractionConfig,
    "train-planner": PlannerConfig,
    "figures": FiguresConfig,
    "experiment": ExperimentConfig,
}
"""Command name → config class (``compkit sweep`` reads this table)."""

TARGETS: dict[type, str] = {
    GenerateConfig: "factored_attention_babyai.generate:generate",
    InspectConfig: "factored_attention_babyai.data:inspect",
    BcConfig: "factored_attention_babyai.train_bc:train_bc",
    BcBenchConfig: "factored_attention_babyai.bench:run_bench",
    BcGridConfig: "factored_attention_babyai.grid:run_grid",
    DiscriminatorConfig: "factored_attention_babyai.discriminator:train_discriminator",
    ExportInteractionConfig: "factored_attention_babyai.discriminator:export_interaction",
    PlannerConfig: "factored_attention_babyai.planner:train_planner",
    FiguresConfig: "factored_attention_babyai.figures:run_figures",
    ExperimentConfig: "factored_attention_babyai.experiment:run_experiment",
}
"""Config class → ``"module:function"`` that runs the command (called with the config)."""

DESCRIPTION = (
    "Sparse factored attention + MVProp planner on BabyAI GoToLocal (Spilsbury & Ilin, "
    "NAACL-SRW 2022): the environment with the paper's semantics, the 36-goal demonstration "
    "dataset, behaviour-cloning baselines and the planner."
)


def _dispatch(cfg: Any) -> int:
    target = TARGETS.get(type(cfg))
    if target is None:
        raise AssertionError(f"unhandled command config: {cfg!r}")
    module_name, _, function_name = target.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    result = function(cfg)
    return result if isinstance(result, int) else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``factored-attention-babyai``; ``argv`` lets tests call it in-process.

    Returns:
        The exit status (2 for bad input, with a one-line ``... error: ...``).
    """
    from compkit_utils.devices import prepare_cpu_runtime
    from compkit_utils.logging import configure_logging

    prepare_cpu_runtime()  # before torch loads its OpenMP runtime and MKL
    configure_logging()
    return run_cli(
        COMMANDS, _dispatch, argv, prog="factored-attention-babyai", description=DESCRIPTION
    )


def entry() -> None:
    """Console-script entry: exit with :func:`main`'s status."""
    raise SystemExit(main())


if __name__ == "__main__":
    raise SystemExit(main())
