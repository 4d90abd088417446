"""ILPO: Imitating Latent Policies from Observation, in PyTorch.

Edwards, Sahni, Schroecker and Isbell, "Imitating Latent Policies from Observation",
ICML 2019 (arXiv:1805.07914). The package trains experts, collects state-only
demonstrations, and learns from them a latent policy network (LPN) and an action
remapping network (ARN).

Torch is imported lazily by the submodules that need it; importing this package is cheap.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ilpo")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled source tree
    __version__ = "0+unknown"
__all__ = ["__version__"]
