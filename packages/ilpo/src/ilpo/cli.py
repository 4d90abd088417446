"""Command line of ``ilpo``.

Nothing heavy is imported at module level: ``ilpo --help`` does not import torch.
"""

from __future__ import annotations

from typing import Any

from compkit_utils.config import run_cli
from ilpo.config import CollectConfig, ExpertConfig, InspectConfig
from ilpo.config_models import (
    ArnConfig,
    BcConfig,
    BcoConfig,
    BenchConfig,
    ExperimentConfig,
    LpnConfig,
)

COMMANDS: dict[str, type] = {
    "expert": ExpertConfig,
    "collect": CollectConfig,
    "inspect": InspectConfig,
    "lpn": LpnConfig,
    "arn": ArnConfig,
    "bc": BcConfig,
    "bco": BcoConfig,
    "bench": BenchConfig,
    "experiment": ExperimentConfig,
}
DESCRIPTION = (
    "ILPO (Edwards et al., ICML 2019): imitating latent policies from state-only "
    "demonstrations. Train experts, collect demonstrations, learn an LPN and an ARN."
)


def _dispatch(cfg: Any) -> int:
    match cfg:
        case ExpertConfig():
            from ilpo.experts import train_expert

            train_expert(cfg)
        case CollectConfig():
            from ilpo.collect import collect

            collect(cfg)
        case InspectConfig():
            from ilpo.data.inspect import inspect

            inspect(cfg)
        case LpnConfig():
            from ilpo.commands import run_lpn

            run_lpn(cfg)
        case ArnConfig():
            from ilpo.commands_online import run_arn

            run_arn(cfg)
        case BcConfig():
            from ilpo.commands_online import run_bc

            run_bc(cfg)
        case BcoConfig():
            from ilpo.commands_online import run_bco

            run_bco(cfg)
        case BenchConfig():
            from ilpo.commands_online import run_bench

            run_bench(cfg)
        case ExperimentConfig():
            from ilpo.experiment import run_experiment

            run_experiment(cfg)
        case _:
            raise AssertionError(f"unhandled command config: {cfg!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ilpo``; ``argv`` lets tests call it in-process.

    Returns:
        The exit status (2 for bad input, with a one-line ``ilpo: error: ...``).
    """
    from compkit_utils.devices import prepare_cpu_runtime
    from compkit_utils.logging import configure_logging

    prepare_cpu_runtime()  # before torch loads its OpenMP runtime and MKL
    configure_logging()
    return run_cli(COMMANDS, _dispatch, argv, prog="ilpo", description=DESCRIPTION)


def entry() -> None:
    """Console-script entry: exit with :func:`main`'s status."""
    raise SystemExit(main())


if __name__ == "__main__":
    raise SystemExit(main())
