"""Vocabulary, goals and the ID/OOD split of GoToLocal (spec §1.4, §2.1, §2.4).

Pure Python + numpy: no gymnasium or minigrid import.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "COLORS",
    "DETERMINERS",
    "GOALS",
    "HELD_OUT",
    "ID_GOALS",
    "MISSION_LENGTH",
    "OOD_GOALS",
    "TYPES",
    "WORDS",
    "WORD_TO_IDX",
    "detokenize",
    "goal_index",
    "is_ood",
    "parse_goal",
    "tokenize",
]

WORDS: tuple[str, ...] = (
    "[act]",
    "a",
    "ball",
    "blue",
    "box",
    "door",
    "go",
    "green",
    "grey",
    "key",
    "purple",
    "red",
    "the",
    "to",
    "yellow",
)
"""The 15 words, sorted; a word's id is its position (``[act]`` = 0 doubles as padding)."""
WORD_TO_IDX: dict[str, int] = {word: i for i, word in enumerate(WORDS)}
MISSION_LENGTH = 5
"""Tokens of every GoToLocal mission (``go to <det> <color> <type>``)."""

COLORS: tuple[str, ...] = ("red", "green", "blue", "purple", "yellow", "grey")
"""Colours in minigrid's id order (``COLOR_TO_IDX``)."""
TYPES: tuple[str, ...] = ("key", "ball", "box")
"""Object types of the level, in minigrid's id order (key 5, ball 6, box 7)."""
DETERMINERS: tuple[str, ...] = ("a", "the")

GOALS: tuple[str, ...] = tuple(
    f"go to {det} {color} {kind}" for det in DETERMINERS for color in COLORS for kind in TYPES
)
"""The 36 goals (distinct mission strings): determiner-major, then colour, then type."""
HELD_OUT: frozenset[tuple[str, str]] = frozenset(
    {
        ("red", "ball"),
        ("green", "box"),
        ("blue", "key"),
        ("yellow", "key"),
        ("grey", "box"),
        ("purple", "ball"),
    }
)
"""The six held-out (colour, type) combinations: every colour once, every type twice."""


def parse_goal(mission: str) -> tuple[str, str, str]:
    """``(determiner, colour, type)`` of a GoToLocal mission.

    Raises:
        ValueError: ``mission`` is not one of :data:`GOALS`.
    """
    words = mission.split()
    if (
        len(words) != MISSION_LENGTH
        or words[:2] != ["go", "to"]
        or words[2] not in DETERMINERS
        or words[3] not in COLORS
        or words[4] not in TYPES
    ):
        raise ValueError(
            f"not a GoToLocal goal: {mission!r} (expected 'go to a|the <color> <type>')"
        )
    return words[2], words[3], words[4]


def is_ood(mission: str) -> bool:
    """Whether a mission's (colour, type) combination is held out (the OOD split)."""
    _, color, kind = parse_goal(mission)
    return (color, kind) in HELD_OUT


ID_GOALS: tuple[str, ...] = tuple(goal for goal in GOALS if not is_ood(goal))
"""The 24 in-distribution goals (the ``train`` split), in :data:`GOALS` order."""
OOD_GOALS: tuple[str, ...] = tuple(goal for goal in GOALS if is_ood(goal))
"""The 12 held-out goals (the ``valid`` split), in :data:`GOALS` order."""
_GOAL_INDEX = {goal: i for i, goal in enumerate(GOALS)}


def goal_index(mission: str) -> int:
    """Position of a mission in :data:`GOALS`.

    Raises:
        ValueError: not a GoToLocal goal.
    """
    index = _GOAL_INDEX.get(mission)
    if index is None:
        parse_goal(mission)  # raises with the reason
        raise AssertionError(mission)  # pragma: no cover - parse_goal accepted a non-goal
    return index


def tokenize(mission: str) -> np.ndarray:
    """Token ids of a mission, split on whitespace.

    Returns:
        ``[L]`` int64 ids into :data:`WORDS`.

    Raises:
        ValueError: a word outside the vocabulary.
    """
    try:
        return np.array([WORD_TO_IDX[word] for word in mission.split()], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"word {exc.args[0]!r} of {mission!r} is not in the vocabulary") from None


def detokenize(tokens: np.ndarray | list[int]) -> str:
    """The mission string of ``[L]`` token ids (the inverse of :func:`tokenize`)."""
    return " ".join(WORDS[int(t)] for t in tokens)
