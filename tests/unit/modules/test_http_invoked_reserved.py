"""Headers that frame, route or encode an HTTP-invoked function's request are the engine's to set, and the secrets an
``auth`` may name can be limited to the variables a deployment means to share.

Before: a worker's ``Content-Length: 3`` cut the caller's data to ``{"o`` and the call succeeded; ``Host`` sent the
request to another virtual host than the allowlisted URL names; ``Transfer-Encoding`` failed every call only at call
time; and any worker could have the engine send it any environment variable (``token_key: DATABASE_PASSWORD``).
"""

from __future__ import annotations

import pytest

from iii_engine.modules.base import EngineError
from iii_engine.modules.http.functions import RESERVED_HEADERS, parse_invocation
from iii_engine.modules.http.security import UrlRules

pytestmark = pytest.mark.timeout(30)

URL = "https://h.example/x"


@pytest.mark.parametrize("name", [*RESERVED_HEADERS, "content-length", "HOST"])
def test_a_header_the_engine_sets_is_refused_at_registration(name: str) -> None:
    with pytest.raises(EngineError) as info:
        parse_invocation("fn", {"url": URL, "headers": {name: "3"}}, {})
    assert info.value.code == "invalid_invocation"
    assert info.value.message.startswith(f"fn: invocation.headers sets header {name}, which the engine sets itself")


def test_an_api_key_header_the_engine_sets_is_refused() -> None:
    auth = {"type": "api_key", "header": "Content-Length", "value_key": "KEY"}
    with pytest.raises(EngineError) as info:
        parse_invocation("fn", {"url": URL, "auth": auth}, {"KEY": "0"})
    assert info.value.message.startswith("fn: invocation.auth sets header Content-Length"), info.value.message


def test_other_headers_still_go() -> None:
    function = parse_invocation("fn", {"url": URL, "headers": {"X-Tenant": "t1", "Accept": "application/json"}}, {})
    assert function.headers == (("X-Tenant", "t1"), ("Accept", "application/json"))


def test_env_allowlist_limits_the_variables_an_auth_may_name() -> None:
    rules = UrlRules.parse({"env_allowlist": ["HOOK_*"]})
    env = {"HOOK_TOKEN": "t0k", "DATABASE_PASSWORD": "hunter2"}
    allowed = parse_invocation("fn", {"url": URL, "auth": {"type": "bearer", "token_key": "HOOK_TOKEN"}}, env,
                               rules=rules)
    assert allowed.auth is not None and allowed.auth.secret == "t0k"
    with pytest.raises(EngineError) as info:
        parse_invocation("fn", {"url": URL, "auth": {"type": "bearer", "token_key": "DATABASE_PASSWORD"}}, env,
                         rules=rules)
    assert (info.value.code, info.value.message) == (
        "token_not_found", "environment variable DATABASE_PASSWORD (auth.token_key) is not one the "
                           "security.env_allowlist setting lets an auth name")
    assert "hunter2" not in str(info.value)


def test_env_allowlist_defaults_to_any_variable_as_production() -> None:
    rules = UrlRules.parse({})
    assert rules.env_allowlist == ("*",)
    function = parse_invocation("fn", {"url": URL, "auth": {"type": "hmac", "secret_key": "ANY_NAME"}},
                                {"ANY_NAME": "s"}, rules=rules)
    assert function.auth is not None
