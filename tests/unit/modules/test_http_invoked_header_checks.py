"""An HTTP-invoked function's headers are checked at registration, and a request the HTTP client refuses to send
fails like any other request: ``http_request_failed`` with a masked message, no traceback.

Before: a header value with CR, LF or NUL was accepted, then every call failed with ``internal_error`` ("Built-in
function fn failed: ValueError('Forbidden control character detected in headers...')") and the engine's traceback
sent to the caller; a header name with a blank or ':' was sent as it was; a malformed invocation was quoted with the
URL's secrets (``got 'https://h/x?token=s3cret'``).
"""

from __future__ import annotations

from typing import Any

import pytest
from http_fake_services import HttpFakeServices

from iii_engine.modules.base import EngineError
from iii_engine.modules.http.functions import HttpFunction, HttpFunctionsModule, parse_invocation
from tests.unit.modules.test_http_invoked import LOCAL, server  # noqa: F401 - fixture

pytestmark = pytest.mark.timeout(30)

def test_a_malformed_invocation_is_quoted_masked() -> None:
    with pytest.raises(EngineError) as info:
        parse_invocation("fn", "https://h/x?token=s3cret", {})
    assert (info.value.code, info.value.message) == (
        "invalid_invocation", "fn: invocation must be an object, got 'https://h/x?token=***'")


@pytest.mark.parametrize("value", ["s3cret\r\nInjected: 1", "s3cret\n", "s3cret\x00", "s3cret\x01", "s3cret\x7f",
                                   "s3cret\ud800"])
def test_a_header_value_http_forbids_is_refused_naming_the_header_only(value: str) -> None:
    with pytest.raises(EngineError) as info:
        parse_invocation("fn", {"url": "https://h/x", "headers": {"X-Api-Key": value}}, {})
    assert info.value.code == "invalid_invocation"
    assert info.value.message.startswith("fn: invocation.headers: the value of header X-Api-Key holds a character "
                                         "HTTP forbids"), info.value.message
    assert "s3cret" not in info.value.message


@pytest.mark.parametrize(("name", "shown"), [("Bad Name", "'Bad' then ' '"), ("X-Key:", "'X-Key' then ':'"),
                                           ("X-K\r\nInjected", "'X-K' then '\\r'"), ("", "an empty one"),
                                           ("X-Ké", "'X-K' then 'é'"), ("X-K\x00", "'X-K' then '\\x00'")])
def test_a_header_name_http_forbids_is_refused(name: str, shown: str) -> None:
    # named up to its first character HTTP does not allow: what follows may be a value put in the name by mistake
    with pytest.raises(EngineError) as info:
        parse_invocation("fn", {"url": "https://h/x", "headers": {name: "s3cret"}}, {})
    assert info.value.code == "invalid_invocation"
    assert info.value.message == (f"fn: invocation.headers has a header name HTTP does not allow: {shown} "
                                  "(letters, digits and !#$%&'*+-.^_`|~ only)")


@pytest.mark.parametrize(("auth", "env"), [
    ({"type": "bearer", "token_key": "TOKEN"}, {"TOKEN": "s3cret\n"}),  # a secret read from a file, newline kept
    ({"type": "api_key", "header": "X-Key", "value_key": "KEY"}, {"KEY": "s3cret\r\n"}),
    ({"type": "api_key", "header": "X Key", "value_key": "KEY"}, {"KEY": "s3cret"}),
])
def test_an_auth_header_http_forbids_is_refused(auth: dict[str, Any], env: dict[str, str]) -> None:
    with pytest.raises(EngineError) as info:
        parse_invocation("fn", {"url": "https://h/x", "auth": auth}, env)
    assert info.value.code == "invalid_invocation"
    assert info.value.message.startswith("fn: invocation.auth"), info.value.message
    assert "s3cret" not in info.value.message


@pytest.mark.parametrize("value", ["plain", "tab\tinside", "caf\u00e9 \u2028"])
def test_header_values_http_allows_are_sent(value: str) -> None:
    assert parse_invocation("fn", {"url": "https://h/x", "headers": {"X-K": value}}, {}).headers == (("X-K", value),)


async def test_a_request_the_client_refuses_fails_as_a_request_failure(server: str) -> None:  # noqa: F811
    module = HttpFunctionsModule(HttpFakeServices(), LOCAL)
    await module.start()
    try:
        # as registered before the check (or refused by a later client for another reason)
        module._endpoints[("fn", None)] = HttpFunction("fn", f"{server}?token=s3cret",
                                                       headers=(("X-K", "s3cret\r\nInjected: 1"),))
        with pytest.raises(EngineError) as info:
            await module.call("fn", {})
    finally:
        await module.stop()
    assert info.value.code == "http_request_failed"
    assert info.value.message.startswith(f"request to {server}?token=*** failed: "), info.value.message
    assert "s3cret" not in info.value.message
    assert info.value.stacktrace is None

