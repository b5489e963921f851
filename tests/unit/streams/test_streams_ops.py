"""Update-op semantics (docs/reference/payloads.md#streams-stream), the one implementation in ``iii.stream_ops``."""

from __future__ import annotations

from typing import Any

import pytest

from iii.stream import UpdateDecrement, UpdateIncrement, UpdateMerge, UpdateSet
from iii.stream_ops import apply_ops, apply_update, op_to_wire, parse_op, to_model
from iii_streams import ops as reexport


def one(value: Any, op: dict[str, Any]) -> Any:
    return apply_ops(value, [op])


@pytest.mark.parametrize(
    ("before", "op", "after"),
    [
        ({"a": 1}, {"type": "set", "path": "", "value": {"b": 2}}, {"b": 2}),
        ([1], {"type": "set", "path": "", "value": 5}, 5),
        ({"a": 1}, {"type": "set", "path": "", "value": None}, {"a": 1, "": None}),
        ({"a": 1}, {"type": "set", "path": ""}, {"a": 1, "": None}),
        ("s", {"type": "set", "path": "", "value": None}, "s"),
        ({}, {"type": "set", "path": "a.b", "value": 1}, {"a.b": 1}),
        ({}, {"type": "set", "path": "k", "value": None}, {"k": None}),
        ([1], {"type": "set", "path": "k", "value": 1}, [1]),
        ({"a": 1, "b": 1}, {"type": "merge", "path": "", "value": {"b": 2, "c": 3}}, {"a": 1, "b": 2, "c": 3}),
        ({"a": 1}, {"type": "merge", "path": None, "value": {"b": 2}}, {"a": 1, "b": 2}),
        ({"a": 1}, {"type": "merge", "value": {"b": 2}}, {"a": 1, "b": 2}),
        ({"a": {"x": 1}}, {"type": "merge", "path": "a", "value": {"y": 2}}, {"a": {"x": 1}}),
        ({"a": 1}, {"type": "merge", "path": "", "value": [1]}, {"a": 1}),
        (7, {"type": "merge", "path": "", "value": {"b": 2}}, 7),
        ({}, {"type": "increment", "path": "n", "by": 3}, {"n": 3}),
        ({"n": 2}, {"type": "increment", "path": "n", "by": 3}, {"n": 5}),
        ({"n": 2**70}, {"type": "increment", "path": "n", "by": 1}, {"n": 2**70 + 1}),
        ({"n": 1.5}, {"type": "increment", "path": "n", "by": 3}, {"n": 3}),
        ({"n": True}, {"type": "increment", "path": "n", "by": 3}, {"n": 3}),
        ({"n": "9"}, {"type": "increment", "path": "n", "by": 3}, {"n": 3}),
        ({"n": None}, {"type": "increment", "path": "n", "by": 3}, {"n": 3}),
        ([1], {"type": "increment", "path": "n", "by": 3}, [1]),
        ({}, {"type": "decrement", "path": "n", "by": 3}, {"n": -3}),
        ({"n": 10}, {"type": "decrement", "path": "n", "by": 3}, {"n": 7}),
        ({"n": 2.0}, {"type": "decrement", "path": "n", "by": 3}, {"n": 0}),
        ({"n": False}, {"type": "decrement", "path": "n", "by": 3}, {"n": 0}),
        ({"n": {"x": 1}}, {"type": "decrement", "path": "n", "by": 3}, {"n": 0}),
        ({"a": 1, "b": 2}, {"type": "remove", "path": "a"}, {"b": 2}),
        ({"b": 2}, {"type": "remove", "path": "a"}, {"b": 2}),
        (None, {"type": "remove", "path": "a"}, None),
    ],
)
def test_op_table(before: Any, op: dict[str, Any], after: Any) -> None:
    result = one(before, op)
    assert result == after
    assert type(result) is type(after)
    if isinstance(after, dict):
        for key, value in after.items():
            assert type(result[key]) is type(value)


def test_input_is_never_mutated_and_ops_apply_in_order() -> None:
    before = {"n": 1, "keep": [1]}
    ops: list[dict[str, Any]] = [
        {"type": "increment", "path": "n", "by": 1},
        {"type": "set", "path": "n", "value": 10},
        {"type": "decrement", "path": "n", "by": 1},
        {"type": "remove", "path": "keep"},
    ]
    assert apply_ops(before, ops) == {"n": 9}
    assert before == {"n": 1, "keep": [1]}


def test_missing_item_starts_as_empty_object() -> None:
    assert apply_update(None, []) == (None, {})
    assert apply_update(None, [{"type": "set", "path": "a", "value": 1}]) == (None, {"a": 1})


def test_models_are_accepted_even_when_pydantic_picked_another_class() -> None:
    # the reference models type `type` as str, so a merge may arrive as an UpdateSet object
    merge_as_set = UpdateSet.model_validate({"type": "merge", "path": "", "value": {"b": 1}})
    ops: list[UpdateSet | UpdateIncrement | UpdateDecrement] = [
        merge_as_set, UpdateIncrement(path="n", by=2), UpdateDecrement(path="m", by=1)]
    assert apply_ops({"a": 0}, ops) == {"a": 0, "b": 1, "n": 2, "m": -1}
    assert apply_ops({}, [UpdateMerge(path="", value={"x": 1})]) == {"x": 1}


@pytest.mark.parametrize(
    ("op", "error", "message"),
    [
        ({"type": "increment", "path": "n", "by": 1.5}, ValueError, r"op #0 \(increment\): 'by' must be an integral"),
        ({"type": "increment", "path": "n", "by": float("nan")}, ValueError, "integral"),
        ({"type": "decrement", "path": "n", "by": 2**63}, ValueError, "signed 64-bit"),
        ({"type": "increment", "path": "n", "by": True}, TypeError, "'by' must be an integer, got bool"),
        ({"type": "increment", "path": "n", "by": "1"}, TypeError, "'by' must be an integer, got str"),
        ({"type": "increment", "path": "n"}, ValueError, "'by' is required"),
        ({"type": "append", "path": "n", "value": 1}, ValueError, "unknown type 'append'"),
        ({"path": "n"}, ValueError, "unknown type None"),
        ({"type": "set", "value": 1}, ValueError, "'path' is required"),
        ({"type": "remove", "path": 3}, TypeError, "'path' must be a string, got int"),
        ({"type": "merge", "path": 3, "value": {}}, TypeError, "'path' must be a string or null"),
    ],
)
def test_bad_ops_are_named(op: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        apply_ops({}, [op])


def test_bad_op_list_and_position_in_message() -> None:
    with pytest.raises(TypeError, match="list of op objects, got dict"):
        apply_ops({}, {"type": "remove", "path": "a"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="update op #1: expected an object, got int"):
        apply_ops({}, [{"type": "remove", "path": "a"}, 5])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="#2"):
        apply_ops({}, [{"type": "remove", "path": "a"}, {"type": "remove", "path": "b"}, {"type": "x"}])


def test_integral_float_by_is_converted_unless_strict() -> None:
    assert parse_op({"type": "increment", "path": "n", "by": 2.0}).by == 2
    assert type(apply_ops({}, [{"type": "increment", "path": "n", "by": 2.0}])["n"]) is int
    with pytest.raises(ValueError, match="JSON integer"):
        parse_op({"type": "increment", "path": "n", "by": 2.0}, strict=True)


def test_wire_and_model_forms() -> None:
    root_merge = {"type": "merge", "path": "", "value": {"a": 1}}
    assert op_to_wire({"type": "merge", "path": None, "value": {"a": 1}}) == root_merge
    assert op_to_wire(UpdateIncrement(path="n", by=3.0)) == {"type": "increment", "path": "n", "by": 3}
    model = to_model({"type": "decrement", "path": "n", "by": 1})
    assert isinstance(model, UpdateDecrement) and model.by == 1
    assert reexport.apply_ops is apply_ops
