from __future__ import annotations

import itertools

import numpy as np
import pytest

from compile_seg.data import EOS, generate_batch


@pytest.fixture(scope="module")
def big_batch():
    return generate_batch(np.random.default_rng(0), 20_000)


def test_symbols_distinct_and_in_range(big_batch):
    symbols = big_batch.symbols
    assert symbols.min() >= 1
    assert symbols.max() <= 5
    assert all(len(set(row)) == 3 for row in symbols.tolist())


def test_run_lengths_are_one_to_four_and_uniform(big_batch):
    starts = np.concatenate([np.zeros((len(big_batch.lengths), 1), int), big_batch.boundaries], 1)
    runs = np.diff(starts, axis=1)
    assert runs.min() == 1
    assert runs.max() == 4
    freqs = np.bincount(runs.ravel(), minlength=5)[1:] / runs.size
    np.testing.assert_allclose(freqs, 0.25, atol=0.01)


def test_every_ordered_symbol_triple_appears_uniformly(big_batch):
    counts = {}
    for row in big_batch.symbols.tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    assert set(counts) == set(itertools.permutations(range(1, 6), 3))
    expected = len(big_batch.symbols) / 60
    assert max(abs(c - expected) for c in counts.values()) < 0.25 * expected


def test_sequences_match_symbols_runs_eos_and_padding(big_batch):
    inputs, lengths = big_batch.inputs, big_batch.lengths
    assert inputs.dtype == np.int64
    assert inputs.shape[1] == lengths.max()
    assert lengths.min() >= 4
    assert lengths.max() <= 13
    for i in range(200):
        length = lengths[i]
        expected = []
        prev = 0
        for symbol, end in zip(big_batch.symbols[i], big_batch.boundaries[i], strict=True):
            expected += [symbol] * (end - prev)
            prev = end
        assert inputs[i, : length - 1].tolist() == expected
        assert inputs[i, length - 1] == EOS
        assert (inputs[i, length:] == 0).all()
        assert big_batch.boundaries[i, -1] == length - 1


def test_seeded_generation_is_reproducible():
    a = generate_batch(np.random.default_rng(3), 64)
    b = generate_batch(np.random.default_rng(3), 64)
    c = generate_batch(np.random.default_rng(4), 64)
    np.testing.assert_array_equal(a.inputs, b.inputs)
    assert a.inputs.shape != c.inputs.shape or (a.inputs != c.inputs).any()


def test_other_sizes_and_too_many_segments():
    batch = generate_batch(
        np.random.default_rng(0), 8, num_symbols=7, num_segments=5, max_segment_len=3
    )
    assert batch.symbols.shape == (8, 5)
    assert (np.diff(np.concatenate([np.zeros((8, 1), int), batch.boundaries], 1)) <= 2).all()
    with pytest.raises(ValueError, match="num_segments"):
        generate_batch(np.random.default_rng(0), 2, num_symbols=2, num_segments=3)
