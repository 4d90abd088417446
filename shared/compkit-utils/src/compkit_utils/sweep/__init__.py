"""Seed and config sweeps (``compkit sweep``) and their tables (``compkit report``).

Nothing here imports torch or ray at module level: ``compkit --help`` stays instant.
"""
