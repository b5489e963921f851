"""A ``TriggerRequest`` built with a keyword it does not know still ignores it, as the reference's models do (code
written for the reference keeps working), but says so: ``TriggerRequest(function_id="f", data=...)`` ran the
function with ``payload`` None without a word."""

from __future__ import annotations

import warnings

import pytest

from iii import TriggerRequest


def test_a_misspelt_keyword_is_named_in_a_warning_pointing_at_the_caller() -> None:
    with pytest.warns(UserWarning, match=r"TriggerRequest ignores 'data': its fields are function_id,") as said:
        request = TriggerRequest(function_id="f", data={"a": 1})
    assert request.payload is None  # ignored, as the reference does
    assert [w.filename for w in said] == [__file__]


def test_every_unknown_key_of_a_validated_dict_is_named() -> None:
    with pytest.warns(UserWarning, match=r"ignores 'paylod', 'timeout'"):
        TriggerRequest.model_validate({"function_id": "f", "paylod": 1, "timeout": 5})


def test_a_request_of_known_fields_says_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        request = TriggerRequest(function_id="f", payload=[1], timeout_ms=5)
        assert TriggerRequest.model_validate(request.model_dump()) == request
