"""Request bodies as JSON objects: duplicates and depth, whatever the strings hold."""

from __future__ import annotations

import json

import pytest

from llmrouter.gateway.errors import InvalidRequest
from llmrouter.gateway.json_body import MAX_DEPTH, depth, parse_object


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', 1),
        ('{"a": [1, {"b": []}]}', 4),
        ('{"a": "[[[[{{{{"}', 1),
        ('{"a": "\\"[[[", "b": ["]]]\\\\"]}', 2),
        ('{"a\\"[": {"]": {}}}', 3),
        ("[" * 50 + "]" * 50, 50),
        ('"just [a] string"', 0),
    ],
)
def test_depth_counts_brackets_outside_strings(text: str, expected: int) -> None:
    assert depth(text.encode()) == expected


def test_depth_bound_is_exact() -> None:
    def body(levels: int) -> bytes:
        return b'{"x":' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"

    assert parse_object(body(MAX_DEPTH)) == json.loads(body(MAX_DEPTH))
    with pytest.raises(InvalidRequest) as refused:
        parse_object(body(MAX_DEPTH + 1))
    assert refused.value.code == "invalid_json"
    # Many brackets side by side are wide, not deep.
    wide = b'{"x":[' + b"[]," * (MAX_DEPTH * 10) + b"[]]}"
    assert parse_object(wide)["x"][0] == []


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "a": 1}',
        '{"a": 1, "\\u0061": 2}',
        '{"x": [{"k": 1, "k": 2}]}',
        '{"x": {"y": {"z": 1, "z": 1}}}',
    ],
)
def test_a_key_twice_in_one_object_is_refused(text: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_object(text.encode())
    assert refused.value.code == "duplicate_key"
    assert refused.value.status == 400


def test_the_same_key_in_different_objects_is_fine() -> None:
    assert parse_object(b'{"a": {"a": {"a": 1}}, "b": [{"a": 1}, {"a": 2}]}')["b"][1]["a"] == 2


@pytest.mark.parametrize(
    "raw",
    [b"[]", b'"text"', b"\xff", b'{"a": "\\ud800"}', b'{"a": NaN}', b'{"a": 1e999}', b"{"],
)
def test_what_is_not_a_json_object_is_refused(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_object(raw)
    assert refused.value.code == "invalid_json"
