"""The fast NumPy decoder gives the programs of `ProgramVAE.decode_greedy`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leaps_karel.dsl import is_valid
from leaps_karel.learn.cem_decode import FastDecoder
from leaps_karel.learn.grammar import check_ids
from leaps_karel.learn.model import ProgramVAE


@pytest.mark.parametrize(("seed", "scale"), [(0, 1.0), (1, 0.1), (2, 0.5)])
def test_fast_decoder_matches_decode_greedy(seed: int, scale: float) -> None:
    torch.manual_seed(seed)
    model = ProgramVAE().eval()
    z = torch.randn(96, 256) * scale
    reference = model.decode_greedy(z).numpy()
    fast = FastDecoder(model).decode_ids(z.numpy())
    assert fast.shape == reference.shape == (96, 45)
    assert np.mean((fast == reference).all(axis=1)) >= 0.99
    for row in fast[:20]:  # every decode is accepted by the grammar automaton
        assert check_ids([0, *row.tolist()])


def test_fast_decoder_texts() -> None:
    torch.manual_seed(0)
    model = ProgramVAE().eval()
    texts = FastDecoder(model)(torch.randn(8, 256))
    assert len(texts) == 8
    assert all(t.startswith("DEF run m(") for t in texts)
    finished = [t for t in texts if t.endswith("m)")]
    assert all(is_valid(t) or len(t.split()) <= 4 for t in finished)
