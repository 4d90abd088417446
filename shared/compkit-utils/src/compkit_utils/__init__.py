"""Common utilities shared by the compkit method packages."""

from __future__ import annotations

__version__ = "0.1.0"
