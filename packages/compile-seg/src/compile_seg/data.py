"""Toy data: sequences of M runs of distinct repeated symbols, then EOS, right-padded.

Generation (follows the original code, not its README):

1. M **distinct** symbols drawn uniformly from 1..S without replacement, in random order.
2. M run lengths drawn independently and uniformly from 1..max_segment_len-1.
3. Sequence = symbol_1 * len_1 + ... + symbol_M * len_M + [0] (EOS), right-padded with 0
   to the longest length in the batch. ``lengths`` counts the EOS.

The batch is generated in one vectorised NumPy pass (no Python loop over samples).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

EOS = 0
"""Token of end-of-sequence, also used for padding."""


@dataclasses.dataclass(frozen=True)
class ToyBatch:
    """One batch of toy sequences (NumPy arrays).

    Attributes:
        inputs: ``(B, T)`` int64 tokens, EOS/padding 0, ``T = max(lengths)``.
        lengths: ``(B,)`` int64 sequence lengths including the EOS.
        boundaries: ``(B, M)`` int64 true boundary positions: entry m is the first position
            after segment m (the last one is ``lengths - 1``, the EOS position).
        symbols: ``(B, M)`` int64 symbol of each segment.
    """

    inputs: np.ndarray
    lengths: np.ndarray
    boundaries: np.ndarray
    symbols: np.ndarray

    def to_torch(
        self, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(inputs, lengths, boundaries)`` as int64 tensors on ``device``."""
        import torch

        return (
            torch.from_numpy(self.inputs).to(device),
            torch.from_numpy(self.lengths).to(device),
            torch.from_numpy(self.boundaries).to(device),
        )


def generate_batch(
    rng: np.random.Generator,
    batch_size: int,
    num_symbols: int = 5,
    num_segments: int = 3,
    max_segment_len: int = 5,
) -> ToyBatch:
    """Generate a batch of toy sequences.

    Args:
        rng: the NumPy generator to draw from (the only source of randomness).
        batch_size: B.
        num_symbols: S; symbols are 1..S.
        num_segments: M; must not exceed S.
        max_segment_len: exclusive upper bound of run lengths (lengths 1..max_segment_len-1).

    Returns:
        The batch; ``T = max(lengths)``.
    """
    if num_segments > num_symbols:
        raise ValueError(f"num_segments ({num_segments}) exceeds num_symbols ({num_symbols})")
    # A uniformly random ordered M-subset of 1..S: the first M entries of a random permutation.
    order = np.argsort(rng.random((batch_size, num_symbols)), axis=1)
    symbols = order[:, :num_segments].astype(np.int64) + 1
    run_lengths = rng.integers(1, max_segment_len, size=(batch_size, num_segments))
    ends = np.cumsum(run_lengths, axis=1).astype(np.int64)  # (B, M); ends[:, -1] = EOS position
    lengths = ends[:, -1] + 1
    max_len = int(lengths.max())
    positions = np.arange(max_len)
    segment = (positions[None, None, :] >= ends[:, :, None]).sum(axis=1)  # (B, T) in 0..M
    padded = np.concatenate([symbols, np.full((batch_size, 1), EOS, np.int64)], axis=1)
    inputs = np.take_along_axis(padded, segment, axis=1)
    return ToyBatch(inputs=inputs, lengths=lengths, boundaries=ends, symbols=symbols)
