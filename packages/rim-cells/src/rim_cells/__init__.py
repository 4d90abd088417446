"""Recurrent Independent Mechanisms in PyTorch."""
