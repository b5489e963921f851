"""The annotation table shared by the format-extraction test and its expected-output generator.

Kept free of project imports so the reference SDK's interpreter can load it too.

Example:
    >>> sorted(CASES)[0]
    'any'
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal, Optional, TypedDict, Union

from pydantic import BaseModel, Field


class Address(BaseModel):
    """A nested model."""

    street: str
    zip_code: str | None = None


class Person(BaseModel):
    """A model with nested, optional and list fields."""

    name: str = Field(description="full name")
    age: int = 0
    tags: list[str] = []
    address: Address | None = None


class Movie(TypedDict):
    """A TypedDict (reference: unsupported)."""

    title: str
    year: int


@dataclasses.dataclass
class Point:
    """A dataclass (reference: unsupported)."""

    x: float
    y: float = 0.0


CASES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "none_type": type(None),
    "none_literal": None,
    "any": Any,
    "list_int": list[int],
    "typing_list_str": typing.List[str],  # noqa: UP006 - the old spelling is part of the table
    "list_any": list[Any],
    "list_list_str": list[list[str]],
    "dict_str_int": dict[str, int],
    "dict_str_any": dict[str, Any],
    "typing_dict_str_float": typing.Dict[str, float],  # noqa: UP006
    "dict_str_list_bool": dict[str, list[bool]],
    "optional_int": Optional[int],  # noqa: UP045
    "pipe_optional_str": str | None,
    "optional_list_int": Optional[list[int]],  # noqa: UP045
    "optional_any": Optional[Any],  # noqa: UP045
    "optional_person": Optional[Person],  # noqa: UP045
    "person": Person,
    "address": Address,
    "list_person": list[Person],
    "dict_str_address": dict[str, Address],
    "bare_list": list,
    "bare_dict": dict,
    "union_int_str": Union[int, str],  # noqa: UP007
    "union_int_str_none": int | str | None,
    "literal": Literal["a", "b"],
    "typeddict": Movie,
    "dataclass": Point,
    "bytes": bytes,
    "object": object,
}
