from __future__ import annotations

import numpy as np
import pytest

from compkit_utils.errors import UserError
from leaps_karel.world import KarelCrash, World

ROWS = ["#####", "#.1.#", "#9.M#", "#####"]


def test_text_round_trip_and_accessors():
    w = World.from_text(ROWS, (1, 1, 1))
    assert w.to_text() == (ROWS, (1, 1, 1))
    assert w.to_dict() == {"grid": ROWS, "agent": [1, 1, 1]}
    assert World.from_dict(w.to_dict()) == w
    assert w.markers_at(2, 3) == 10
    assert w.total_markers() == 20
    assert w.is_wall(0, 0)
    assert w.is_wall(-1, 2)
    assert not w.is_wall(1, 2)
    assert ">" in w.render_ascii()


def test_tensor_round_trip_and_channels():
    w = World.from_text(ROWS, (2, 2, 3))
    s = w.to_tensor()
    assert s.shape == (4, 5, 16)
    assert s.dtype == bool
    assert s[2, 2, 3]
    assert s[:, :, :4].sum() == 1
    assert s[0, 0, 4]
    assert not s[0, 0, 5]
    assert s[1, 2, 6]
    assert s[2, 1, 14]
    assert s[2, 3, 15]
    assert s[1, 1, 5]
    assert World.from_tensor(s) == w
    # Generators that never set channel 5: a cell without marker bits counts 0.
    s2 = s.copy()
    s2[:, :, 5] = False
    assert World.from_tensor(s2) == w


def test_perceptions_and_no_crash_actions():
    w = World.from_text(["#####", "#...#", "#####"], (1, 1, 1))
    assert w.perception() == (True, False, False, False, True)
    assert w.step(0)
    assert w.agent == (1, 2, 1)
    assert w.step(0)
    assert not w.step(0)
    assert w.agent == (1, 3, 3)  # blocked move turns the agent around
    assert not w.step(3)  # nothing to pick
    for _ in range(9):
        assert w.step(4)
    assert not w.step(4)  # a cell holds at most 9 markers through actions
    assert w.markers_at(1, 3) == 9
    assert w.step(1)
    assert w.agent[2] == 2
    assert w.step(2)
    assert w.agent[2] == 3
    assert not w.step(5)  # ids >= 5: no-op


def test_crash_mode_raises_and_leaves_world_unchanged():
    w = World.from_text(["###", "#.#", "###"], (1, 1, 0))
    before = w.copy()
    for action in (0, 3):
        with pytest.raises(KarelCrash):
            w.step(action, crash=True)
    assert w == before


@pytest.mark.parametrize(
    ("rows", "agent", "message"),
    [
        (["###", "##"], (1, 1, 0), "row 1 has length 2"),
        (["###", "#x#", "###"], (1, 1, 0), "unknown character 'x'"),
        (["###", "#.#", "###"], (0, 0, 0), "on a wall"),
        (["###", "#.#", "###"], (5, 1, 0), "outside"),
        (["###", "#.#", "###"], (1, 1, 7), "direction"),
        ([], (0, 0, 0), "non-empty"),
    ],
)
def test_bad_worlds_are_rejected(rows, agent, message):
    with pytest.raises(UserError, match=message):
        World.from_text(rows, agent)


def test_from_dict_names_the_source():
    with pytest.raises(UserError, match=r"w\.json: expected an object"):
        World.from_dict({"grid": ["#"]}, source="w.json")
    with pytest.raises(UserError, match=r"w\.json: 'agent'"):
        World.from_dict({"grid": ["#.#"], "agent": ["a", 1, 0]}, source="w.json")


def test_copy_is_independent():
    w = World.from_text(ROWS, (1, 1, 1))
    c = w.copy()
    c.step(4)
    assert c != w
    assert w.markers_at(1, 1) == 0
    assert np.array_equal(w.to_tensor(), World.from_text(ROWS, (1, 1, 1)).to_tensor())
