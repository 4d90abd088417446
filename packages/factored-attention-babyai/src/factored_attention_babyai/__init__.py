"""Sparse factored attention + MVProp planner on BabyAI GoToLocal, in PyTorch.

Spilsbury and Ilin, "Compositional Generalization in Grounded Language Learning via Induced
Model Sparsity", NAACL 2022 Student Research Workshop (arXiv:2207.02518). The package
provides the GoToLocal environment with the paper's semantics (:mod:`.env`), the 36-goal
demonstration dataset (:mod:`.generate`, :mod:`.data`), behaviour-cloning baselines and the
factored-attention planner.

Torch is imported lazily by the submodules that need it; importing this package is cheap.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("factored-attention-babyai")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled source tree
    __version__ = "0+unknown"
__all__ = ["__version__"]
