"""Recurrent Independent Mechanisms (Goyal et al., 2019) in PyTorch.

``from rim_cells import RIM, RIMCell`` — the library classes are imported lazily, so
importing the package (for instance by the ``rim-cells`` command line) does not import
torch.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rim_cells._native import set_backend
    from rim_cells.cell import ActivationRule, RIMCell, RIMStepInfo
    from rim_cells.group import GroupGRUCell, GroupLinear, GroupLSTMCell
    from rim_cells.rim import RIM

try:
    __version__ = metadata.version("rim-cells")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_LAZY = {
    "ActivationRule": "rim_cells.cell",
    "RIMCell": "rim_cells.cell",
    "RIMStepInfo": "rim_cells.cell",
    "GroupGRUCell": "rim_cells.group",
    "GroupLSTMCell": "rim_cells.group",
    "GroupLinear": "rim_cells.group",
    "RIM": "rim_cells.rim",
    "set_backend": "rim_cells._native",
}

__all__ = [
    "RIM",
    "ActivationRule",
    "GroupGRUCell",
    "GroupLSTMCell",
    "GroupLinear",
    "RIMCell",
    "RIMStepInfo",
    "__version__",
    "set_backend",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rim_cells' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
