from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from factored_attention_babyai.data import (
    DemoDataset,
    goal_lists,
    interleave,
    load_subsets,
    read_rows,
)
from factored_attention_babyai.vocab import GOALS, ID_GOALS, OOD_GOALS, tokenize

from .conftest import SMALL_PER_GOAL


def test_interleave_is_goal_balanced() -> None:
    lists = [[10, 11, 12], [20, 21, 22], [30, 31, 32]]
    assert interleave(lists, 0, 2) == [10, 20, 30, 11, 21, 31]
    assert interleave(lists, 2, 3) == [12, 22, 32]
    order = interleave(lists, 0, 3)
    for i, row in enumerate(order):
        assert row // 10 == 1 + i % 3  # item i → goal i mod G
        assert row % 10 == i // 3  # the (i div G)-th index of that goal


def test_subsets_follow_section_2_6(small_dataset: Path) -> None:
    subsets = load_subsets(small_dataset, limit=1, vlimit=1, tlimit=2)
    assert (subsets.limit, subsets.total) == (1, SMALL_PER_GOAL)
    train, id_valid, ood = subsets.train, subsets.id_valid, subsets.ood_valid
    assert len(train) == 24
    assert len(id_valid) == 24
    assert len(ood) == 12 * 2
    # Interleaved: item i belongs to goal i mod G (ID goals in GOALS order).
    assert [GOALS[g] for g in train.goals] == list(ID_GOALS)
    assert [GOALS[g] for g in ood.goals] == list(OOD_GOALS) * 2
    lists = goal_lists(small_dataset, "train")
    # Training = the first of each goal; ID validation = the last vlimit of each goal.
    assert train.seeds.tolist() == [
        int(read_rows(small_dataset, "train", [lists[g][0]])["envs"][0]) for g in ID_GOALS
    ]
    assert id_valid.seeds.tolist() == [
        int(read_rows(small_dataset, "train", [lists[g][-1]])["envs"][0]) for g in ID_GOALS
    ]
    assert not set(train.seeds.tolist()) & set(id_valid.seeds.tolist())
    # OOD validation: the first tlimit of each held-out goal, file (= seed) order per goal.
    first, second = ood.seeds[:12], ood.seeds[12:]
    assert (first < second).all()


def test_default_limit_is_all_but_validation(small_dataset: Path) -> None:
    subsets = load_subsets(small_dataset, vlimit=1, tlimit=1)
    assert subsets.limit == SMALL_PER_GOAL - 1
    assert len(subsets.train) == 24 * (SMALL_PER_GOAL - 1)


def test_goal_restriction(small_dataset: Path) -> None:
    goals = ["go to the red key", "go to a red ball", "go to a blue box"]
    subsets = load_subsets(small_dataset, limit=1, vlimit=1, tlimit=1, goals=goals)
    assert [GOALS[g] for g in subsets.train.goals] == ["go to a blue box", "go to the red key"]
    assert [GOALS[g] for g in subsets.ood_valid.goals] == ["go to a red ball"]


def test_items_are_tensors_with_the_documented_shapes(small_dataset: Path) -> None:
    data = load_subsets(small_dataset, limit=1, vlimit=1, tlimit=1).train
    item = data[3]
    tmax = item["images"].shape[0]
    assert item["images"].dtype == torch.uint8
    assert item["images"].shape == (tmax, 8, 8, 3)
    assert item["mission"].tolist() == tokenize(GOALS[int(item["goal"])]).tolist()
    assert item["actions"].dtype == torch.int64
    length = int(item["length"])
    assert item["mask"].sum() == length
    assert item["actions"][length - 1] == 6
    assert item["returns"][length - 1] == 1.0
    assert item["target"].shape == (8, 8)
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=5)))  # pyright: ignore[reportArgumentType]
    assert batch["images"].shape == (5, tmax, 8, 8, 3)
    assert len(DemoDataset(None)) == 0


def test_hdf5_and_tfds_readers_return_identical_items(small_dataset: Path) -> None:
    a = load_subsets(small_dataset, limit=1, vlimit=1, tlimit=2, fmt="hdf5")
    b = load_subsets(small_dataset, limit=1, vlimit=1, tlimit=2, fmt="tfds")
    for name in ("train", "id_valid", "ood_valid"):
        left, right = getattr(a, name), getattr(b, name)
        assert len(left) == len(right) > 0
        for i in range(len(left)):
            x, y = left[i], right[i]
            assert x.keys() == y.keys()
            for key in x:
                assert x[key].dtype == y[key].dtype, key
                assert torch.equal(x[key], y[key]), (name, i, key)
    rows = np.arange(5)[::-1]
    h, t = (
        read_rows(small_dataset, "valid", rows, fmt="hdf5"),
        read_rows(small_dataset, "valid", rows, fmt="tfds"),
    )
    for key in h:
        assert np.array_equal(h[key], t[key]), key
