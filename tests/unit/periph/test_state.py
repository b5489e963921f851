"""iii.state models and the IState contract."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from iii.state import (
    DeleteResult,
    IState,
    StateEventData,
    StateEventType,
    StateGetInput,
    StateSetInput,
    StateSetResult,
    StateUpdateInput,
)
from iii.stream import UpdateIncrement, UpdateSet


def test_update_input_parses_each_op_kind() -> None:
    parsed = StateUpdateInput.model_validate(
        {"scope": "s", "key": "k", "ops": [{"type": "set", "path": "a", "value": 1},
                                           {"type": "increment", "path": "n", "by": 2}]}
    )
    assert isinstance(parsed.ops[0], UpdateSet) and isinstance(parsed.ops[1], UpdateIncrement)


def test_required_fields() -> None:
    with pytest.raises(ValidationError, match="value"):
        StateSetInput.model_validate({"scope": "s", "key": "k"})
    with pytest.raises(ValidationError, match="new_value"):
        StateSetResult[int].model_validate({"old_value": 1})
    assert StateSetInput(scope="s", key="k", value=None).value is None  # present-but-null is fine


def test_event_data_round_trip() -> None:
    event = StateEventData[dict[str, int]].model_validate(
        {"type": "state", "event_type": "state:updated", "scope": "s", "key": "k", "new_value": {"n": 1}}
    )
    assert event.event_type is StateEventType.UPDATED and event.old_value is None
    assert event.model_dump(mode="json")["event_type"] == "state:updated"
    assert StateEventType.DELETED.value == "state:deleted" and isinstance(StateEventType.DELETED, str)


def test_istate_is_abstract() -> None:
    with pytest.raises(TypeError, match="abstract"):
        IState()  # type: ignore[abstract]


async def test_a_minimal_istate() -> None:
    class One(IState[int]):
        async def get(self, input: StateGetInput) -> int | None:
            return 1

        async def set(self, input):  # type: ignore[no-untyped-def]
            return None

        async def delete(self, input):  # type: ignore[no-untyped-def]
            return DeleteResult(old_value=1)

        async def list(self, input):  # type: ignore[no-untyped-def]
            return [1]

        async def update(self, input):  # type: ignore[no-untyped-def]
            return None

    store = One()
    assert await store.get(StateGetInput(scope="s", key="k")) == 1
    assert (await store.delete(None)).old_value == 1  # type: ignore[no-untyped-call]
