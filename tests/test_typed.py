"""Typed settings: what the command line's strings become for each annotated type, and what is refused."""

from typing import Literal, Optional

import pytest

from lra_base.errors import ConfigError
from lra_base.typed import coerce, type_name


@pytest.mark.parametrize("value, tp, expected", [
    ("none", Optional[int], None),
    (None, int | None, None),
    ("7", Optional[int], 7),
    ("2.5", int | float, 2.5),  # the first member that accepts it
    ("3", Literal[3, 5, 7], 3),  # a numeric choice written as a string
    ("fast", Literal["fast", "exact"], "fast"),
    ('{"a": 1}', dict, {"a": 1}),
    ("[1, 2]", tuple[int, ...], (1, 2)),
    ([1, 2], list, [1, 2]),
    ("yes", bool, True), ("OFF", bool, False), (True, bool, True),
    ("1_000", int, 1000), ("1e3", int, 1000), (2.0, int, 2), (4, int, 4),
    ("1e-3", float, 1e-3), (3, float, 3.0),
    ("abc", str, "abc"),
])
def test_accepted_values(value, tp, expected):
    got = coerce(value, tp, "train.x")
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("value, tp, words", [
    ("none", int, "must be an integer"),  # only Optional takes None
    ("9", Literal[3, 5, 7], "must be one of [3, 5, 7]"),
    ("{not json", dict, "must be JSON (dict)"),
    ('{"a": 1}', list, "must be a list"),
    ("maybe", bool, "must be true or false"),
    (1, bool, "must be true or false"),
    ("2.5", int, "must be an integer"),
    (True, int, "must be an integer"),
    (2.5, int, "must be an integer"),
    (False, float, "must be a number"),
    ("fast", float, "must be a number"),
    (3, str, "must be a string"),
])
def test_refused_values_name_the_setting_and_the_type(value, tp, words):
    with pytest.raises(ConfigError) as exc:
        coerce(value, tp, "train.x")
    assert "train.x" in str(exc.value) and words in str(exc.value)


def test_type_names_for_help_texts():
    assert type_name(Literal["a", "b"]) == "{a|b}"
    assert type_name(int | None) == "int | NoneType"
    assert type_name(float) == "float"
