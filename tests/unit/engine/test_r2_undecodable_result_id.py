"""An undecodable ``invocationresult`` ends its call whatever form of the call's UUID it carries (R2).

A well-formed result may name its call in any form the engine accepts as a UUID (upper case, no dashes): it is
matched in canonical form. The undecodable one was looked up as written, so the same callee's broken answer in such
a form ended nothing and its caller waited for good (no ``invocation_timeout_ms`` by default).
"""

from __future__ import annotations

from typing import Any

import pytest

from iii_engine import Engine
from tests.unit.engine.test_undecodable_result import CALL_ID, _call_answered_with, engine

__all__ = ["engine"]  # the fixture, shared

pytestmark = pytest.mark.timeout(20)

FORMS = {"upper": CALL_ID.upper(), "no-dashes": CALL_ID.replace("-", ""), "braces": "{" + CALL_ID + "}"}


def _answer(call_id: str, body: str) -> str:
    return '{"type":"invocationresult","invocation_id":"' + call_id + '",' + body + "}"


@pytest.mark.parametrize("form", ["upper", "no-dashes"])
@pytest.mark.parametrize("body", ['"function_id":"w.f","result":NaN', '"function_id":7,"result":1'],
                         ids=["not-json", "bad-field"])
async def test_an_undecodable_result_in_another_uuid_form_ends_its_call(engine: Engine, form: str, body: str) -> None:
    result: dict[str, Any] = await _call_answered_with(engine, _answer(FORMS[form], body))
    assert result["invocation_id"] == CALL_ID
    assert result["error"]["code"] == "invalid_result"
    assert not engine.invocations.pending


async def test_a_braced_uuid_in_a_bad_field_frame_ends_its_call(engine: Engine) -> None:
    # JSON, so the id is read as a value: any form uuid.UUID takes is the call's id (as for a good result)
    result = await _call_answered_with(engine, _answer(FORMS["braces"], '"function_id":7,"result":1'))
    assert result["error"]["code"] == "invalid_result"
    assert not engine.invocations.pending
