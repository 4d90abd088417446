"""CompILE (toy sequence-segmentation version) in PyTorch.

Kipf et al., "CompILE: Compositional Imitation Learning and Execution", ICML 2019
(arXiv:1812.01483). The package re-implements the authors' simplified toy that segments
integer sequences made of repeated symbols, faithfully by default and fast.

Torch is imported lazily by the submodules that need it; importing this package is cheap.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("compile-seg")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled source tree
    __version__ = "0+unknown"
__all__ = ["__version__"]
