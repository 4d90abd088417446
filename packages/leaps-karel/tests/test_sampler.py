from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest

from leaps_karel import dsl
from leaps_karel.interpreter import execute
from leaps_karel.sampler import ProgramSampler, SamplerConfig, action_count_bounds
from leaps_karel.world import World

DATA = Path(__file__).parent / "data"
CONTROL = ("WHILE", "IF", "IFELSE", "REPEAT")


@pytest.fixture(scope="module")
def reference() -> list[list[str]]:
    with gzip.open(DATA / "sampler_draws_seed123.txt.gz", "rt") as handle:
        return [line.split() for line in handle if line.strip()]


@pytest.fixture(scope="module")
def ours() -> list[list[str]]:
    sampler = ProgramSampler(seed=0)
    return [sampler.sample_tokens() for _ in range(10_000)]


def nesting_depth(tokens: list[str]) -> int:
    depth = best = 0
    for token in tokens:
        if token in ("w(", "r(", "i(", "e("):
            depth += 1
            best = max(best, depth)
        elif token in ("w)", "r)", "i)", "e)"):
            depth -= 1
    return best


def assert_same_fraction(name: str, ref: np.ndarray, new: np.ndarray, sigmas: float = 4.0) -> None:
    """Two-sample test on a proportion: |p1 - p2| within `sigmas` standard errors."""
    p1, p2 = float(ref.mean()), float(new.mean())
    pooled = (ref.sum() + new.sum()) / (len(ref) + len(new))
    se = math.sqrt(max(pooled * (1 - pooled), 1e-4) * (1 / len(ref) + 1 / len(new)))
    assert abs(p1 - p2) <= sigmas * se + 1e-3, f"{name}: original {p1:.4f}, ours {p2:.4f}"


def test_deterministic_given_seed() -> None:
    a = ProgramSampler(seed=7).sample_many(300)
    b = ProgramSampler(seed=7).sample_many(300)
    c = ProgramSampler(seed=8).sample_many(300)
    assert a == b
    assert a != c


def test_draws_parse_with_the_strict_grammar(ours: list[list[str]]) -> None:
    for tokens in ours[:2000]:
        program = dsl.parse(tokens, strict=True)
        assert dsl.to_tokens(program) == tokens
        assert dsl.ids_to_tokens(dsl.to_ids(tokens)) == tokens


def test_token_length_distribution_matches_original(
    reference: list[list[str]], ours: list[list[str]]
) -> None:
    ref = np.array([len(t) for t in reference], dtype=float)
    new = np.array([len(t) for t in ours], dtype=float)
    se = math.sqrt(ref.var() / len(ref) + new.var() / len(new))
    assert abs(ref.mean() - new.mean()) <= 4 * se, (ref.mean(), new.mean())
    assert abs(ref.std() - new.std()) <= 0.05 * ref.std()
    # Spec §7: mean 15.3, median 15, p90 26, p99 35.
    assert abs(new.mean() - 15.3) < 0.4
    assert np.median(new) == pytest.approx(15, abs=1)
    assert np.percentile(new, 90) == pytest.approx(np.percentile(ref, 90), abs=2)
    assert np.percentile(new, 99) == pytest.approx(np.percentile(ref, 99), abs=3)
    for threshold in (8, 10, 15, 20, 30):
        assert_same_fraction(f"length >= {threshold}", ref >= threshold, new >= threshold)
    assert (new >= 45).mean() < 0.003


def test_construct_frequencies_match_original(
    reference: list[list[str]], ours: list[list[str]]
) -> None:
    for token in (*CONTROL, "not"):
        assert_same_fraction(
            f"contains {token}",
            np.array([token in t for t in reference]),
            np.array([token in t for t in ours]),
        )
    assert_same_fraction(
        "no control flow",
        np.array([not any(c in t for c in CONTROL) for t in reference]),
        np.array([not any(c in t for c in CONTROL) for t in ours]),
    )


def test_token_frequencies_match_original(
    reference: list[list[str]], ours: list[list[str]]
) -> None:
    def frequencies(programs: list[list[str]]) -> tuple[dict[str, float], int]:
        counts: dict[str, int] = {}
        total = 0
        for tokens in programs:
            for token in tokens[3:-1]:
                key = "R=k" if token.startswith("R=") else token
                counts[key] = counts.get(key, 0) + 1
                total += 1
        return {k: v / total for k, v in counts.items()}, total

    ref, n_ref = frequencies(reference)
    new, n_new = frequencies(ours)
    assert set(ref) <= set(new)
    for token, p in ref.items():
        # Tokens within a program are correlated: allow 6 naive standard errors.
        se = math.sqrt(p * (1 - p) * (1 / n_ref + 1 / n_new))
        assert abs(p - new[token]) <= 6 * se + 2e-3, (token, p, new[token])


def test_nesting_depth_distribution_matches_original(
    reference: list[list[str]], ours: list[list[str]]
) -> None:
    ref = np.array([nesting_depth(t) for t in reference])
    new = np.array([nesting_depth(t) for t in ours])
    assert new.max() <= 3  # depth limit 6: bodies at depths 3 and 5, a third level is forced
    for depth in range(4):
        assert_same_fraction(f"nesting depth {depth}", ref == depth, new == depth)


def test_distinct_fraction_matches_original(
    reference: list[list[str]], ours: list[list[str]]
) -> None:
    n = len(reference)
    ref_distinct = len({" ".join(t) for t in reference}) / n
    new_distinct = len({" ".join(t) for t in ours[:n]}) / n
    assert abs(ref_distinct - new_distinct) < 0.025, (ref_distinct, new_distinct)


@pytest.mark.parametrize(
    ("config", "max_nesting"),
    [(SamplerConfig(max_depth=1), 1), (SamplerConfig(max_nesting_depth=0), 1)],
)
def test_depth_limits_force_actions(config: SamplerConfig, max_nesting: int) -> None:
    sampler = ProgramSampler(seed=3, config=config)
    programs = [sampler.sample_tokens() for _ in range(500)]
    assert max(nesting_depth(t) for t in programs) == max_nesting
    if config.max_depth == 1:
        # Only the top statement may expand; each of its children is forced to one action,
        # so a program holds at most two actions (a sequence or an IFELSE).
        counts = [sum(t in dsl.ACTIONS for t in tokens) for tokens in programs]
        assert max(counts) == 2
        assert all(c >= 1 for c in counts)


@pytest.mark.parametrize(
    ("text", "bounds"),
    [
        ("DEF run m( move m)", (1, 1)),
        ("DEF run m( move turnLeft putMarker m)", (3, 3)),
        ("DEF run m( IF c( frontIsClear c) i( move move i) m)", (0, 2)),
        (
            "DEF run m( IFELSE c( not c( markersPresent c) c) i( move i) ELSE e( move move e) m)",
            (1, 2),
        ),
        ("DEF run m( REPEAT R=5 r( move turnLeft r) m)", (10, 10)),
        ("DEF run m( REPEAT R=0 r( move r) pickMarker m)", (1, 1)),
        ("DEF run m( move WHILE c( frontIsClear c) w( move w) m)", (1, 1 << 30)),
        ("DEF run m( WHILE c( frontIsClear c) w( REPEAT R=0 r( move r) w) m)", (0, 0)),
    ],
)
def test_action_count_bounds(text: str, bounds: tuple[int, int]) -> None:
    assert action_count_bounds(text.split()) == bounds


def test_action_count_bounds_hold_for_finished_executions() -> None:
    sampler = ProgramSampler(seed=11)
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(300):
        tokens = sampler.sample_tokens()
        low, high = action_count_bounds(tokens)
        for _ in range(3):
            walls = [
                1 if r in (0, 7) or c in (0, 7) or rng.random() < 0.1 else 0
                for r in range(8)
                for c in range(8)
            ]
            free = [i for i, w in enumerate(walls) if not w]
            pos = int(rng.choice(free))
            markers = [int(not w and rng.random() < 0.2) for w in walls]
            world = World(8, 8, walls, markers, (pos // 8, pos % 8, int(rng.integers(4))))
            result = execute(" ".join(tokens), world)
            if result.finished:
                checked += 1
                assert low <= len(result.actions) <= high, (tokens, len(result.actions))
    assert checked > 500
