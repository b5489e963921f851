"""Format extraction against outputs recorded from the reference SDK (``gen_format_expected.py``)."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from iii.format_utils import (
    JSON_SCHEMA_DIALECT,
    extract_request_format,
    extract_response_format,
    python_type_to_format,
)

from .format_cases import CASES, Person

EXPECTED: dict[str, Any] = json.loads(pathlib.Path(__file__).with_name("format_expected.json").read_text())

# Annotations the reference answers None for and we describe (documented extensions).
OURS: dict[str, Any] = {
    "bare_list": {"type": "array"},
    "bare_dict": {"type": "object"},
    "union_int_str": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
    "union_int_str_none": {"anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "null"}]},
    "literal": {"enum": ["a", "b"], "type": "string"},
    "typeddict": {
        "properties": {"title": {"type": "string"}, "year": {"type": "integer"}},
        "required": ["title", "year"],
        "title": "Movie",
        "type": "object",
    },
}


def test_table_covers_every_case() -> None:
    assert set(EXPECTED) == set(CASES)


@pytest.mark.parametrize("name", sorted(name for name, value in EXPECTED.items() if value is not None))
def test_matches_reference(name: str) -> None:
    assert python_type_to_format(CASES[name]) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(OURS))
def test_extensions_where_reference_has_none(name: str) -> None:
    assert EXPECTED[name] is None
    got = python_type_to_format(CASES[name])
    assert got is not None
    assert got.pop("$schema") == JSON_SCHEMA_DIALECT
    assert got == OURS[name]


def test_dataclass_schema_names_its_fields() -> None:
    got = python_type_to_format(CASES["dataclass"])
    assert got is not None
    assert got["required"] == ["x"]
    assert got["properties"]["y"] == {"default": 0.0, "title": "Y", "type": "number"}


@pytest.mark.parametrize("name", ["any", "optional_any", "none_literal", "bytes", "object"])
def test_unsupported_stays_none(name: str) -> None:
    assert python_type_to_format(CASES[name]) is None


def test_schema_is_a_fresh_dict_each_time() -> None:
    first = python_type_to_format(list[int])
    assert first is not None
    first["items"]["type"] = "mutated"
    assert python_type_to_format(list[int]) == EXPECTED["list_int"]


async def typed_handler(data: Person) -> list[str]:
    return [data.name]


def untyped_handler(data):  # type: ignore[no-untyped-def]
    return data


def test_extract_from_handlers() -> None:
    assert extract_request_format(typed_handler) == EXPECTED["person"]
    assert extract_response_format(typed_handler) == {"type": "array", "items": {"type": "string"},
                                                      "$schema": JSON_SCHEMA_DIALECT}
    assert extract_request_format(untyped_handler) is None
    assert extract_response_format(untyped_handler) is None


def test_extract_edge_cases() -> None:
    def no_params() -> None: ...

    def bad_forward_ref(data: "DoesNotExist") -> int:  # type: ignore[name-defined]  # noqa: F821, UP037
        return 1

    class Service:
        def handle(self, data: dict[str, int]) -> bool:
            return True

    assert extract_request_format(no_params) is None
    assert extract_response_format(no_params) == {"type": "null", "$schema": JSON_SCHEMA_DIALECT}
    assert extract_request_format(bad_forward_ref) is None
    assert extract_response_format(bad_forward_ref) is None
    assert extract_request_format(Service().handle) == EXPECTED["dict_str_int"]
    assert extract_request_format("not callable") is None
