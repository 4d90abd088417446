"""The ``rim-cells`` command line: nested tyro subcommands over frozen config dataclasses.

Commands::

    rim-cells seqmnist train|evaluate
    rim-cells minigrid train|evaluate|visualize
    rim-cells bench
    rim-cells plot-activations

Adding a command: import its config class, add it to :data:`COMMANDS` (inside a group's
dict for a grouped command) and add a ``case`` to :func:`dispatch` that imports and runs
it. Neither this module nor ``config.py`` imports torch, so ``rim-cells --help`` is instant.
"""

from __future__ import annotations

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


def dispatch(cfg: Any) -> int:
    """Run the command whose config class ``cfg`` is (its module is imported only here)."""
    match cfg:
        case SeqMnistTrainConfig():
            from rim_cells.seqmnist.train import train

            train(cfg)
        case SeqMnistEvaluateConfig():
            from rim_cells.seqmnist.evaluate import evaluate

            evaluate(cfg)
        case MiniGridTrainConfig():
            from rim_cells.minigrid.train import train as train_minigrid

            print(f"run directory: {train_minigrid(cfg)}")
        case MiniGridEvaluateConfig():
            from rim_cells.minigrid.evaluate import evaluate as evaluate_minigrid

            evaluate_minigrid(cfg)
        case MiniGridVisualizeConfig():
            from rim_cells.minigrid.visualize import visualize

            visualize(cfg)
        case BenchConfig():
            from rim_cells.bench import bench

            bench(cfg)
        case PlotActivationsConfig():
            from rim_cells.plot import plot_activations

            plot_activations(cfg)
        case _:
            raise AssertionError(f"unhandled command config: {cfg!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rim-cells``; ``argv`` lets tests call it in-process.

    Returns:
        The exit status: 0 on success, 2 for a user error (printed as one line).
    """
    from compkit_utils.config import run_cli
    from compkit_utils.devices import prepare_cpu_runtime
    from compkit_utils.logging import configure_logging

    prepare_cpu_runtime()  # before torch loads its OpenMP runtime and MKL
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
