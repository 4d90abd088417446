"""The learning commands of ``leaps-karel``: name → config class → implementation.

Kept free of torch imports so that ``leaps-karel --help`` and the engine commands work in an
install without the ``learn`` extra. Each entry names the config dataclass (imported here,
torch-free) and the ``module:function`` that runs it; ``needs_torch`` commands check that torch
is importable before the implementation is imported and otherwise stop with the install line.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

from compkit_utils.errors import UserError, install_hint


@dataclass(frozen=True)
class LearnCommand:
    """One learning command.

    Attributes:
        config: the tyro config dataclass of the command.
        target: ``"module:function"``; the function takes the config and returns an exit status.
        needs_torch: whether the command needs the ``learn`` extra.
    """

    config: type
    target: str
    needs_torch: bool = True


def _registry() -> dict[str, LearnCommand]:
    # Each command's owner adds its entry here (one line per command).
    from leaps_karel.learn.cem_config import CemConfig
    from leaps_karel.learn.pretrain_config import PretrainConfig
    from leaps_karel.learn.search_config import SearchConfig
    from leaps_karel.learn.tables_config import (
        ReconstructionTableConfig,
        Table3Config,
        Table9Config,
    )

    return {
        "cem": LearnCommand(CemConfig, "leaps_karel.learn.cem:main"),
        "pretrain": LearnCommand(PretrainConfig, "leaps_karel.learn.pretrain:main"),
        "search": LearnCommand(SearchConfig, "leaps_karel.learn.search:main", needs_torch=False),
        "table3": LearnCommand(Table3Config, "leaps_karel.learn.tables:table3"),
        "table-reconstruction": LearnCommand(
            ReconstructionTableConfig, "leaps_karel.learn.tables:table_reconstruction"
        ),
        "table9": LearnCommand(Table9Config, "leaps_karel.learn.tables:table9"),
    }


LEARN: dict[str, LearnCommand] = _registry()
LEARN_COMMANDS: dict[str, type] = {name: cmd.config for name, cmd in LEARN.items()}


def torch_available() -> bool:
    """Whether torch can be imported (the ``learn`` extra is installed)."""
    return importlib.util.find_spec("torch") is not None


def dispatch_learn(cfg: Any) -> int | None:
    """Run ``cfg`` if it is a learning command's config; ``None`` if it is not one."""
    for name, cmd in LEARN.items():
        if type(cfg) is cmd.config:
            if cmd.needs_torch and not torch_available():
                raise UserError(
                    f"`leaps-karel {name}` needs PyTorch, which is not installed; install the "
                    f"learning extra: {install_hint('leaps-karel', 'learn')}"
                )
            module, function = cmd.target.split(":")
            return int(getattr(importlib.import_module(module), function)(cfg))
    return None
