from __future__ import annotations

import pytest

from leaps_karel import dsl
from leaps_karel.dsl import ParseError, is_valid, parse, to_text


def test_vocabulary_has_the_original_ids():
    assert dsl.NUM_TOKENS == 50
    assert dsl.PAD_ID == 50
    expected = {
        "DEF": 0, "run": 1, "m(": 2, "m)": 3, "move": 4, "turnRight": 5, "turnLeft": 6,
        "pickMarker": 7, "putMarker": 8, "r(": 9, "r)": 10, "R=0": 11, "R=19": 30,
        "REPEAT": 31, "c(": 32, "c)": 33, "i(": 34, "i)": 35, "e(": 36, "e)": 37, "IF": 38,
        "IFELSE": 39, "ELSE": 40, "frontIsClear": 41, "leftIsClear": 42, "rightIsClear": 43,
        "markersPresent": 44, "noMarkersPresent": 45, "not": 46, "w(": 47, "w)": 48,
        "WHILE": 49,
    }  # fmt: skip
    for token, idx in expected.items():
        assert dsl.VOCAB[token] == idx
        assert dsl.TOKENS[idx] == token


def test_every_fixture_program_round_trips(interpreter_cases):
    for text in {c["program"] for c in interpreter_cases}:
        if "not c( not" in text:
            with pytest.raises(ParseError):
                parse(text, strict=True)
        program = parse(text)
        assert to_text(program) == text
        assert parse(dsl.pretty(program)) == program
        ids = dsl.to_ids(program)
        assert dsl.ids_to_text([*ids, 50, 4, 4]) == text
        assert dsl.parse_ids(ids) == program


def test_structure_of_a_parsed_program():
    p = parse(
        "DEF run m( REPEAT R=0 r( move r) IFELSE c( not c( markersPresent c) c) "
        "i( putMarker i) ELSE e( turnLeft e) m)"
    )
    assert p.body == (
        dsl.Repeat(0, (dsl.Action("move"),)),
        dsl.IfElse(
            dsl.Not(dsl.Prim("markersPresent")),
            (dsl.Action("putMarker"),),
            (dsl.Action("turnLeft"),),
        ),
    )


@pytest.mark.parametrize(
    ("text", "position", "expected"),
    [
        ("DEF run m( m)", 3, "a statement"),
        ("DEF run m( move", 4, "or 'm)'"),
        ("run m( move m)", 0, "'DEF'"),
        ("DEF run m( WHILE c( move c) w( move w) m)", 5, "a perception or 'not'"),
        ("DEF run m( WHILE c( frontIsClear c) w( w) m)", 8, "a statement"),
        ("DEF run m( move m) move", 5, "end of program"),
        ("DEF run m( REPEAT r( move r) m)", 4, "R=0..R=19"),
        ("DEF run m( IFELSE c( frontIsClear c) i( move i) e( move e) m)", 10, "'ELSE'"),
        ("DEF run m( jump m)", 3, "a DSL token"),
    ],
)
def test_parse_errors_name_position_and_expectation(text, position, expected):
    with pytest.raises(ParseError) as info:
        parse(text)
    assert info.value.position == position
    assert expected in str(info.value)


def test_strict_grammar_rejects_nested_not_only():
    nested = "DEF run m( IF c( not c( not c( frontIsClear c) c) c) i( move i) m)"
    stmt = parse(nested).body[0]
    assert isinstance(stmt, dsl.If)
    assert stmt.cond == dsl.Not(dsl.Not(dsl.Prim("frontIsClear")))
    with pytest.raises(ParseError, match="expected a perception"):
        parse(nested, strict=True)
    parse("DEF run m( IF c( not c( frontIsClear c) c) i( move i) m)", strict=True)


def test_validity_test_of_the_task_rewards():
    assert is_valid("DEF run m( move m)")
    assert is_valid([0, 1, 2, 4, 3, 50, 50])
    assert not is_valid("DEF run m( m)")
    assert not is_valid("DEF run m( move move")
    assert not is_valid([0, 1, 2, 3])
    assert not is_valid("DEF run m( move m) m)")
    assert not is_valid("")


def test_absurdly_deep_program_is_a_parse_error():
    text = "DEF run m( " + "REPEAT R=1 r( " * 5000 + "move" + " r)" * 5000 + " m)"
    with pytest.raises(ParseError, match="nested too deeply"):
        parse(text)
