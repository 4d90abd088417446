"""Command line of ``compile-seg``: ``train``, ``evaluate`` and ``bench``.

Nothing heavy is imported at module level: ``compile-seg --help`` does not import torch.
"""

from __future__ import annotations

from typing import Any

from compile_seg.config import BenchConfig, EvaluateConfig, TrainConfig
from compkit_utils.config import run_cli

COMMANDS: dict[str, type] = {
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "bench": BenchConfig,
}
DESCRIPTION = (
    "CompILE (Kipf et al., ICML 2019) on the toy sequence-segmentation task: "
    "train, evaluate a checkpoint, or time it against a reference implementation."
)


def _dispatch(cfg: Any) -> int:
    match cfg:
        case TrainConfig():
            from compile_seg.train import train

            train(cfg)
        case EvaluateConfig():
            from compile_seg.evaluate import evaluate

            evaluate(cfg)
        case BenchConfig():
            from compile_seg.bench import run_bench

            run_bench(cfg)
        case _:
            raise AssertionError(f"unhandled command config: {cfg!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``compile-seg``; ``argv`` lets tests call it in-process.

    Returns:
        The exit status (2 for bad input, with a one-line ``compile-seg: error: ...``).
    """
    from compkit_utils.devices import prepare_cpu_runtime
    from compkit_utils.logging import configure_logging

    prepare_cpu_runtime()  # before torch loads its OpenMP runtime and MKL
    configure_logging()
    return run_cli(COMMANDS, _dispatch, argv, prog="compile-seg", description=DESCRIPTION)


def entry() -> None:
    """Console-script entry: exit with :func:`main`'s status."""
    raise SystemExit(main())


if __name__ == "__main__":
    raise SystemExit(main())
