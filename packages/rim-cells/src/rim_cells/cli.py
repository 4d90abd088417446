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
import sys
from collections.abc import Mapping
from typing import Annotated, Any, Union

from compkit_utils.errors import UserError
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


def _union(tree: Mapping[str, Any]) -> Any:
    import tyro

    members = []
    for name, value in tree.items():
        if isinstance(value, Mapping):
            marker = tyro.conf.subcommand(name=name, description=GROUP_HELP.get(name, ""))
            members.append(Annotated[_union(value), marker])
        else:
            members.append(Annotated[value, tyro.conf.subcommand(name=name)])
    return Union[tuple(members)]  # noqa: UP007 - a runtime-built union needs the subscript form


def parse(argv: list[str] | None = None) -> Any:
    """Parse ``argv`` into one of the config dataclasses (tyro exits on ``--help``/errors)."""
    import tyro

    return tyro.cli(
        _union(COMMANDS),
        args=argv,
        prog=PROG,
        description="Recurrent Independent Mechanisms: library experiments and benchmarks.",
        config=(tyro.conf.OmitSubcommandPrefixes,),
    )


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
    from compkit_utils.logging import configure_logging

    cfg = parse(argv)
    configure_logging()
    try:
        result = dispatch(cfg)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    return 0 if result is None else int(result)


def entry() -> None:
    """Console-script entry: exit with :func:`main`'s status."""
    raise SystemExit(main())


if __name__ == "__main__":
    raise SystemExit(main())
