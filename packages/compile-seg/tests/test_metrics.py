from __future__ import annotations

import torch
import torch.nn.functional as F

from compile_seg.bench import reference_rec_accuracy
from compile_seg.metrics import boundary_counts, reconstruct, reconstruct_output
from compile_seg.model import CompILEOutput


def _acc(inputs, positions, symbols):
    return reconstruct(torch.tensor(inputs), torch.tensor(positions), torch.tensor(symbols))


def test_perfect_reconstruction():
    rec = _acc([[1, 1, 2, 2, 3, 0]], [[2, 4, 5]], [[1, 2, 3]])
    assert rec.accuracy.tolist() == [1.0]
    assert rec.sample(0).tolist() == [1, 1, 2, 2, 3]


def test_backwards_boundary_gives_an_empty_segment():
    rec = _acc([[1, 1, 2, 2, 3, 0]], [[3, 1, 5]], [[1, 2, 3]])
    assert rec.positions.tolist() == [[3, 3, 5]]
    assert rec.sample(0).tolist() == [1, 1, 1, 3, 3]
    torch.testing.assert_close(rec.accuracy, torch.tensor([0.6]))


def test_boundary_in_padding_extends_the_reconstruction():
    rec = _acc([[1, 2, 3, 0, 0, 0, 0]], [[1, 6, 3]], [[1, 2, 3]])
    assert rec.lengths.tolist() == [6]
    assert rec.sample(0).tolist() == [1, 2, 2, 2, 2, 2]
    torch.testing.assert_close(rec.accuracy, torch.tensor([2 / 6]))


def test_metric_is_a_per_sequence_mean():
    rec = _acc([[1, 2, 3, 0, 0], [1, 1, 2, 2, 0]], [[1, 2, 3], [2, 3, 4]], [[1, 2, 4], [1, 2, 2]])
    torch.testing.assert_close(rec.accuracy, torch.tensor([2 / 3, 1.0]))


def test_vectorised_metric_equals_python_loop_on_random_cases():
    gen = torch.Generator().manual_seed(0)
    batch, steps, segments, vocab = 200, 9, 3, 6
    inputs = torch.randint(0, vocab, (batch, steps), generator=gen)
    lengths = torch.randint(4, steps + 1, (batch,), generator=gen)
    positions = torch.randint(1, steps, (batch, segments), generator=gen)
    positions[:, -1] = lengths - 1
    symbols = torch.randint(0, vocab, (batch, segments), generator=gen)
    out = CompILEOutput(
        encodings=[],
        boundary_logits=[],
        boundaries=[F.one_hot(positions[:, m], steps).float() for m in range(segments)],
        encoder_masks=[],
        latent_logits=[],
        latents=[],
        reconstructions=[F.one_hot(symbols[:, m], vocab).float() for m in range(segments)],
    )
    ours = reconstruct_output(out, inputs).accuracy.mean().item()
    assert abs(ours - reference_rec_accuracy(out, inputs)) < 1e-6


def test_boundary_precision_recall_f1():
    lengths = torch.tensor([6, 6, 6, 6])
    actual = torch.tensor([[2, 4]] * 4)
    predicted = torch.tensor([[2, 4], [2, 3], [2, 2], [2, 6]])
    counts = boundary_counts(predicted, actual, lengths)
    # row 0: 2 hits; row 1: 1 hit, 1 miss; row 2: duplicate counts once; row 3: 6 is padding.
    assert counts.true_positives == 2 + 1 + 1 + 1
    assert counts.predicted == 2 + 2 + 1 + 1
    assert counts.actual == 8
    assert counts.exact == 1
    assert abs(counts.precision - 5 / 6) < 1e-12
    assert abs(counts.recall - 5 / 8) < 1e-12
    p, r = 5 / 6, 5 / 8
    assert abs(counts.f1 - 2 * p * r / (p + r)) < 1e-12


def test_boundary_counts_without_predictions():
    counts = boundary_counts(torch.tensor([[5, 5]]), torch.tensor([[1, 3]]), torch.tensor([6]))
    assert counts.predicted == 0
    assert counts.precision == 0.0
    assert counts.f1 == 0.0
