"""CompILE (toy sequence-segmentation version) in PyTorch.

Kipf et al., "CompILE: Compositional Imitation Learning and Execution", ICML 2019
(arXiv:1812.01483). The package re-implements the authors' simplified toy that segments
integer sequences made of repeated symbols, faithfully by default and fast.

Torch is imported lazily by the submodules that need it; importing this package is cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
