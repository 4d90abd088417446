"""The ``rim-cells`` command line: nested tyro subcommands over frozen config dataclasses.

Commands::

    rim-cells seqmnist train|evaluate
    rim-cells minigrid train|evaluate|visualize
    rim-cells bench
    rim-cells plot-activations

Adding a command group is a three-line change: import its config classes, add a
``"group": {"name": ConfigClass}`` entry to :data:`COMMANDS`, and map each config class
to the ``"module:function"`` that runs it in :data:`RUNNERS`. Neither this module nor
``config.py`` imports torch, so ``rim-cells --help`` is instant.
"""

from __future__ import annotations

import importlib
from typing import Any

from rim_cells.config import (
    BenchConfig,
    PlotActivationsConfig,
    SeqMnistEvaluateConfig,
    SeqMnistTrainConfig,
)
from rim_cells.minigrid.config import (
    MiniGridEvaluateConfig,
    MiniGridTrainConfig,
    MiniGridVisualizeConfig,
)

PROG = "rim-cells"

COMMANDS: dict[str, Any] = {
    "seqmnist": {"train": SeqMnistTrainConfig, "evaluate": SeqMnistEvaluateConfig},
    "minigrid": {
        "train": MiniGridTrainConfig,
        "evaluate": MiniGridEvaluateConfig,
        "visualize": MiniGridVisualizeConfig,
    },
    "bench": BenchConfig,
    "plot-activations": PlotActivationsConfig,
}
"""Subcommand tree: a name maps to a config class or to a dict of subcommands."""

GROUP_HELP: dict[str, str] = {
    "seqmnist": "Sequential MNIST (or offline 8x8 digits): train, evaluate.",
    "minigrid": "MiniGrid recurrent PPO with RIM or LSTM memory: train, evaluate, visualize.",
}
"""Help line of each command group."""

RUNNERS: dict[type, str] = {
    SeqMnistTrainConfig: "rim_cells.seqmnist.train:train",
    SeqMnistEvaluateConfig: "rim_cells.seqmnist.evaluate:evaluate",
    BenchConfig: "rim_cells.bench:bench",
    PlotActivationsConfig: "rim_cells.plot:plot_activations",
    MiniGridTrainConfig: "rim_cells.minigrid.cli:run_train",
    MiniGridEvaluateConfig: "rim_cells.minigrid.cli:run_evaluate",
    MiniGridVisualizeConfig: "rim_cells.minigrid.cli:run_visualize",
}
"""Config class → ``"module:function"`` called with the parsed config (imported lazily)."""


def dispatch(cfg: Any) -> int | None:
    """Run the function registered for ``type(cfg)`` in :data:`RUNNERS`."""
    target = RUNNERS.get(type(cfg))
    if target is None:
        raise AssertionError(f"unhandled command config: {cfg!r}")
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)(cfg)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rim-cells``; ``argv`` lets tests call it in-process.

    Returns:
        The exit status: 0 on success, 2 for a user error (printed as one line).
    """
    from compkit_utils.config import run_cli
    from compkit_utils.logging import configure_logging

    configure_logging()
    return run_cli(
        COMMANDS,
        dispatch,
        argv,
        prog=PROG,
        description="Recurrent Independent Mechanisms: library experiments and benchmarks.",
        group_help=GROUP_HELP,
    )


def entry() -> None:
    """Console-script entry: exit with :func:`main`'s status."""
    raise SystemExit(main())


if __name__ == "__main__":
    raise SystemExit(main())
