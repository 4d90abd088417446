"""Demonstration generator (work in progress)."""

from __future__ import annotations

from compkit_utils.errors import UserError


def generate(cfg: object) -> int:
    """Generate the dataset described by ``cfg``."""
    raise UserError("generate: not available yet in this checkout")
