"""Evaluation metrics, vectorised over the batch.

``rec_acc_eval`` (the original's metric): for each sample, walk the segments in order,
clamping every boundary to be at least the previous one (a "backwards" boundary gives an
empty segment), and emit segment m's argmax symbol at positions [prev, pos). The
reconstruction has length ``R = max(boundaries)`` (normally L - 1; longer if a boundary sits
in the padding). Its accuracy is the fraction of positions t < R where it equals the padded
input; the metric is the mean of these per-sequence accuracies.

Boundary precision/recall/F1 compare the M - 1 predicted inner boundaries with the true
ones the generator knows (exact positions). A predicted boundary counts only if it splits
the sequence (0 < pos < L - 1), and duplicates count once; boundaries at or after the EOS
make empty segments and count as missing.
"""

from __future__ import annotations

import dataclasses

import torch

from compile_seg.model import CompILEOutput


@dataclasses.dataclass
class Reconstruction:
    """Hard segmentation and reconstruction of a batch.

    Attributes:
        positions: ``(B, M)`` boundary positions after the monotonic clamp (last = end).
        symbols: ``(B, M)`` argmax symbol of each segment's decoder.
        tokens: ``(B, T - 1)`` reconstructed tokens, -1 at positions t >= ``lengths``.
        lengths: ``(B,)`` reconstruction lengths R.
        accuracy: ``(B,)`` per-sequence accuracy against the padded input.
    """

    positions: torch.Tensor
    symbols: torch.Tensor
    tokens: torch.Tensor
    lengths: torch.Tensor
    accuracy: torch.Tensor

    def sample(self, index: int) -> torch.Tensor:
        """The reconstruction of sample ``index`` (a 1-d int64 tensor of length R)."""
        return self.tokens[index, : int(self.lengths[index])]


def boundary_positions(out: CompILEOutput) -> torch.Tensor:
    """``(B, M)`` argmax position of every boundary (the last one is the EOS position)."""
    return torch.stack([b.argmax(1) for b in out.boundaries], dim=1)


def reconstruct(
    inputs: torch.Tensor, positions: torch.Tensor, symbols: torch.Tensor
) -> Reconstruction:
    """Vectorised reconstruction and per-sequence accuracy.

    Args:
        inputs: ``(B, T)`` padded input tokens.
        positions: ``(B, M)`` raw boundary positions (argmax of each b_m).
        symbols: ``(B, M)`` symbol predicted for each segment.
    """
    steps = inputs.shape[1]
    clamped = torch.cummax(positions, dim=1).values
    rec_len = clamped[:, -1]
    t = torch.arange(steps - 1, device=inputs.device)
    # Segment of position t: the number of (clamped) boundaries at or before t.
    segment = (clamped.unsqueeze(2) <= t.view(1, 1, -1)).sum(1)  # (B, T-1)
    valid = t.unsqueeze(0) < rec_len.unsqueeze(1)
    segment = segment.clamp(max=symbols.shape[1] - 1)
    tokens = torch.gather(symbols, 1, segment)
    correct = (tokens == inputs[:, :-1]) & valid
    accuracy = correct.sum(1).to(torch.float32) / rec_len.clamp(min=1).to(torch.float32)
    tokens = tokens.masked_fill(~valid, -1)
    return Reconstruction(clamped, symbols, tokens, rec_len, accuracy)


def reconstruct_output(out: CompILEOutput, inputs: torch.Tensor) -> Reconstruction:
    """:func:`reconstruct` from an evaluation-mode forward pass."""
    symbols = torch.stack([rec.argmax(1) for rec in out.reconstructions], dim=1)
    return reconstruct(inputs, boundary_positions(out), symbols)


@dataclasses.dataclass
class BoundaryCounts:
    """Micro-averaged boundary detection counts over a batch.

    Attributes:
        true_positives: predicted inner boundaries that match a true one.
        predicted: distinct predicted inner boundaries (0 < pos < L - 1).
        actual: true inner boundaries.
        exact: sequences whose predicted inner boundaries equal the true ones.
        sequences: batch size.
    """

    true_positives: int
    predicted: int
    actual: int
    exact: int
    sequences: int

    @property
    def precision(self) -> float:
        return self.true_positives / self.predicted if self.predicted else 0.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.actual if self.actual else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0


def boundary_counts(
    predicted: torch.Tensor, actual: torch.Tensor, lengths: torch.Tensor
) -> BoundaryCounts:
    """Compare predicted and true inner boundaries.

    Args:
        predicted: ``(B, K)`` predicted positions (raw argmax of b_0..b_{M-2}).
        actual: ``(B, K)`` true positions (strictly increasing, inside the sequence).
        lengths: ``(B,)`` sequence lengths including the EOS.
    """
    batch, steps = predicted.shape[0], int(lengths.max())
    inside = (predicted > 0) & (predicted < (lengths - 1).unsqueeze(1))
    rows = torch.arange(batch, device=predicted.device).unsqueeze(1)
    # Boolean sets over positions; writing True twice keeps duplicates counted once.
    pred_set = torch.zeros(batch, steps, dtype=torch.bool, device=predicted.device)
    pred_set[rows.expand_as(predicted)[inside], predicted[inside]] = True
    true_set = torch.zeros_like(pred_set)
    true_set[rows.expand_as(actual), actual] = True
    true_positives = int((pred_set & true_set).sum())
    exact = int((pred_set == true_set).all(1).sum())
    return BoundaryCounts(
        true_positives=true_positives,
        predicted=int(pred_set.sum()),
        actual=int(true_set.sum()),
        exact=exact,
        sequences=batch,
    )


@torch.inference_mode()
def evaluate_batch(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    lengths: torch.Tensor,
    true_boundaries: torch.Tensor | None = None,
) -> tuple[dict[str, float], Reconstruction]:
    """Evaluation-mode metrics of ``model`` on one batch (the model is left in eval mode).

    Args:
        model: a :class:`compile_seg.model.CompILE`.
        inputs: ``(B, T)`` tokens.
        lengths: ``(B,)`` lengths including the EOS.
        true_boundaries: ``(B, M)`` true boundary positions from the generator; adds the
            boundary precision/recall/F1 and exact-segmentation rate when given.

    Returns:
        ``({"rec_acc": ..., "boundary_precision": ..., ...}, reconstruction)``.
    """
    model.eval()
    out = model(inputs, lengths)
    rec = reconstruct_output(out, inputs)
    metrics = {"rec_acc": float(rec.accuracy.mean())}
    if true_boundaries is not None and true_boundaries.shape[1] > 1:
        counts = boundary_counts(boundary_positions(out)[:, :-1], true_boundaries[:, :-1], lengths)
        metrics.update(
            boundary_precision=counts.precision,
            boundary_recall=counts.recall,
            boundary_f1=counts.f1,
            segmentation_exact=counts.exact / counts.sequences,
        )
    return metrics, rec
