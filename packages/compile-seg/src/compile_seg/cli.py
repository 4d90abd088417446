"""Command line of ``compile-seg``: ``train``, ``evaluate`` and ``bench``.

Nothing heavy is imported at module level: ``compile-seg --help`` does not import torch.
"""

from __future__ import annotations

import os
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


def prefer_thread_invariant_blas() -> None:
    """Ask MKL for matrix products that do not depend on the thread count.

    The thread count is chosen at start from the idle cores, so two runs of one seeded
    command may use different counts. The native encoder kernels give the same bits at any
    count; MKL's products do not by default (the small ones, such as the ``(V, H) @ (H, 4H)``
    projection table and the decoder's weight gradient, split their work by thread). Its
    strict conditional-reproducibility mode (``MKL_CBWR=AUTO,STRICT``: the best code path for
    the CPU, results independent of the thread count) closes that gap, so a seeded CPU run
    reproduces its metrics exactly at any thread count on the same machine. MKL reads the
    setting at its first call, so this runs first thing; a user's ``MKL_CBWR`` wins.
    """
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``compile-seg``; ``argv`` lets tests call it in-process.

    Returns:
        The exit status (2 for bad input, with a one-line ``compile-seg: error: ...``).
    """
    from compkit_utils.devices import prefer_passive_wait
    from compkit_utils.logging import configure_logging

    prefer_passive_wait()  # before torch loads its OpenMP runtime
    prefer_thread_invariant_blas()  # before the first matrix product
    configure_logging()
    return run_cli(COMMANDS, _dispatch, argv, prog="compile-seg", description=DESCRIPTION)


def entry() -> None:
    """Console-script entry: exit with :func:`main`'s status."""
    raise SystemExit(main())


if __name__ == "__main__":
    raise SystemExit(main())
