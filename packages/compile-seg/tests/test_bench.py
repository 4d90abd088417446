from __future__ import annotations

import itertools

import numpy as np

from compile_seg.bench import reference_generate
from compile_seg.cli import main


def test_bench_prints_both_implementations_and_ratios(capsys):
    args = ["bench", "--repeats", "1", "--warmup", "0", "--batch-size", "8", "--threads", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "reference" in out
    assert "speed-up" in out
    assert "train step (ms)" in out
    assert "evaluation (ms)" in out
    assert "75 ms/step, 140 ms/eval" in out


def test_bench_without_reference(capsys):
    args = ["bench", "--repeats", "1", "--warmup", "0", "--batch-size", "8", "--skip-reference"]
    assert main(args) == 0
    assert "speed-up" not in capsys.readouterr().out


def test_reference_generator_has_the_same_distribution():
    inputs, lengths = reference_generate(np.random.default_rng(0), 2000)
    assert inputs.shape[1] == int(lengths.max())
    assert int(lengths.min()) >= 4
    assert int(lengths.max()) <= 13
    assert abs(float(lengths.float().mean()) - 8.5) < 0.1
    for row, length in zip(inputs.tolist()[:100], lengths.tolist()[:100], strict=True):
        assert row[length - 1] == 0
        body = row[: length - 1]
        runs = [body[0]] + [b for a, b in itertools.pairwise(body) if a != b]
        assert len(runs) == 3
        assert len(set(runs)) == 3
