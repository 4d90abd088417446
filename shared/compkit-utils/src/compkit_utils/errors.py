"""User-facing errors: one clear line, exit status 2 from every CLI."""

from __future__ import annotations

import functools
from pathlib import Path


class UserError(Exception):
    """Bad input from the user (a file, a field, a flag).

    The message is a single line that names what is wrong and how to fix it. CLIs built
    with :func:`compkit_utils.config.run_cli` print it as ``error: <message>`` on stderr
    and exit with status 2.
    """


def install_hint(dist: str, extra: str) -> str:
    """How to install an extra: ``uv sync --extra X --package D`` in the compkit workspace.

    Outside a workspace checkout (an installed wheel) it is ``pip install 'D[X]'``.

    Args:
        dist: the distribution that declares the extra, e.g. ``"compile-seg"``.
        extra: the extra's name, e.g. ``"tensorboard"``.
    """
    if _in_workspace_checkout():
        return f"uv sync --extra {extra} --package {dist}"
    return f"pip install '{dist}[{extra}]'"


def missing_torch(feature: str, dist: str = "compkit-utils", extra: str = "torch") -> UserError:
    """The one-line error for a feature that needs PyTorch where torch is not installed.

    Use as ``try: import torch`` / ``except ImportError as exc: raise missing_torch(...) from exc``.

    Args:
        feature: what needs torch, e.g. ``"checkpoints"``.
        dist: the distribution whose extra brings torch.
        extra: that extra's name.
    """
    return UserError(
        f"{feature} needs PyTorch, which is not installed; install it: {install_hint(dist, extra)}"
    )


@functools.cache
def _in_workspace_checkout() -> bool:
    """Whether this code runs from a uv workspace checkout (an editable workspace install)."""
    for folder in Path(__file__).resolve().parents:
        pyproject = folder / "pyproject.toml"
        try:
            if "[tool.uv.workspace]" in pyproject.read_text(encoding="utf-8"):
                return True
        except OSError:
            continue
    return False
