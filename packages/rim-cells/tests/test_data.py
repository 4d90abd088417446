from __future__ import annotations

import numpy as np
import pytest

from compkit_utils.errors import UserError
from rim_cells.config import SeqDataConfig
from rim_cells.seqmnist.data import binarise, load_sequences, nearest_resize


def test_nearest_resize_matches_opencv_rule():
    img = np.arange(16).reshape(1, 4, 4)
    up = nearest_resize(img, 6)
    # OpenCV INTER_NEAREST: source index floor(i * 4 / 6) = 0,0,1,2,2,3
    assert up[0, 0].tolist() == [0, 0, 1, 2, 2, 3]
    assert up[0, :, 0].tolist() == [0, 0, 4, 8, 8, 12]
    down = nearest_resize(np.arange(28 * 28).reshape(1, 28, 28), 14)
    assert down[0, 1, 1] == 2 * 28 + 2


def test_binarise_threshold():
    img = np.array([[[120, 121], [0, 255]]], dtype=np.uint8)
    assert binarise(img, 255).tolist() == [[0, 1, 0, 1]]


def test_digits_protocol_shapes_and_split():
    data = load_sequences(SeqDataConfig(dataset="digits"), seed=0)
    assert data.train_size == 8
    assert data.train_x.shape == (1348, 64)
    assert sorted(data.tests) == [8, 9, 11, 14]
    assert data.tests[14][0].shape == (449, 196)
    # test sequences at the train size are the same pixels as a held-out image read directly
    assert set(np.unique(data.train_x)) == {0, 1}
    other = load_sequences(SeqDataConfig(dataset="digits"), seed=1)
    assert not np.array_equal(other.train_y, data.train_y)


def test_bad_sizes_are_user_errors():
    with pytest.raises(UserError, match="image sizes"):
        load_sequences(SeqDataConfig(dataset="digits", test_sizes=(1,)), seed=0)
    with pytest.raises(UserError, match="test-fraction"):
        load_sequences(SeqDataConfig(dataset="digits", digits_test_fraction=1.5), seed=0)


def test_read_digits_known_facts():
    from rim_cells.seqmnist.data import read_digits

    images, labels = read_digits()
    assert images.shape == (1797, 8, 8)
    assert images.max() == 16 and images.min() == 0
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert labels[:5].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_read_digits_equals_sklearn_load_digits():
    from sklearn.datasets import load_digits

    from rim_cells.seqmnist.data import read_digits

    images, labels = read_digits()
    bunch = load_digits()
    np.testing.assert_array_equal(images, bunch.images)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(labels, bunch.target)  # type: ignore[attr-defined]
