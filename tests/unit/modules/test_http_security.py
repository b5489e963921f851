"""URL rules, blocked address ranges, auth resolution and the HMAC signature of HTTP-invoked functions."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress

import pytest

from iii_engine.modules.base import EngineError
from iii_engine.modules.http.security import UrlRejected, UrlRules, is_blocked_ip, resolve_auth, sign
from iii_engine.settings import ConfigError


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.1.1", "255.255.255.255", "192.0.2.7",
    "198.51.100.1", "203.0.113.9", "0.0.0.0", "::1", "fd00::1", "fe80::1", "::", "ff02::1", "::ffff:10.0.0.1",
])
def test_blocked_ranges(address: str) -> None:
    assert is_blocked_ip(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])  # ::ffff:0:0/96 is refused whole
def test_public_addresses_pass(address: str) -> None:
    assert not is_blocked_ip(ipaddress.ip_address(address))


@pytest.mark.parametrize("url, message", [
    ("not a url", "Invalid URL"),
    ("ftp://files.example.com/x", "Invalid URL"),
    ("https://:443/x", "Invalid URL"),
    ("https://api.example.com:99999/", "Invalid URL"),
    ("http://api.example.com/x", "HTTPS is required"),
    ("https://example.com/x", "URL not in allowlist"),  # "*.example.com" does not match the apex
    ("https://api.example.org/x", "URL not in allowlist"),
])
def test_syntax_rules(url: str, message: str) -> None:
    rules = UrlRules(url_allowlist=("*.example.com", "https://example.com"))
    with pytest.raises(UrlRejected, match=f"^{message}$"):
        rules.check_syntax(url)


def test_allowlist_matches_host_only_case_insensitively() -> None:
    rules = UrlRules(url_allowlist=("*.Example.com",))
    assert rules.check_syntax("https://API.example.COM:8443/p?q=1").hostname == "api.example.com"


async def test_dns_and_literal_ip_checks() -> None:
    blocking = UrlRules(require_https=False)
    with pytest.raises(UrlRejected, match=r"^Private IP blocked$"):
        await blocking.check("http://127.0.0.1:8080/")
    with pytest.raises(UrlRejected, match=r"^Private IP blocked$"):
        await blocking.check("http://localhost/")  # resolves to loopback
    with pytest.raises(UrlRejected, match=r"^Private IP blocked$"):
        await blocking.check("http://[::1]/")
    with pytest.raises(UrlRejected, match=r"^DNS lookup failed$"):
        await blocking.check("http://no-such-host.invalid/")
    assert (await UrlRules(block_private_ips=False, require_https=False).check("http://localhost/")).port is None


def test_settings_parse() -> None:
    assert UrlRules.parse(None) == UrlRules(url_allowlist=("*",), block_private_ips=True, require_https=True)
    with pytest.raises(ConfigError, match=r"^security\.require_https: must be true or false, got 'no'$"):
        UrlRules.parse({"require_https": "no"}, at="security")
    with pytest.raises(ConfigError, match=r"^url_allowlist: must be a list, got 'localhost'$"):
        UrlRules.parse({"url_allowlist": "localhost"})


def test_signature_matches_an_independent_computation() -> None:
    body = b'{"amount":12.5,"currency":"EUR"}'
    message = b"1700000000:" + base64.b64encode(body)
    expected = hmac.new(b"s3cret", message, hashlib.sha256).hexdigest()
    assert sign("s3cret", "1700000000", body) == f"sha256={expected}"
    assert sign("s3cret", "1700000001", body) != f"sha256={expected}"


@pytest.mark.parametrize("auth, code", [
    ({"type": "hmac", "secret_key": "MISSING"}, "secret_not_found"),
    ({"type": "bearer", "token_key": "MISSING"}, "token_not_found"),
    ({"type": "api_key", "header": "X-Key", "value_key": "MISSING"}, "api_key_not_found"),
    ({"type": "api_key", "value_key": "PRESENT"}, "invalid_auth"),
    ({"type": "basic"}, "invalid_auth"),
    ({"type": "bearer"}, "invalid_auth"),
])
def test_auth_errors(auth: dict[str, str], code: str) -> None:
    with pytest.raises(EngineError) as info:
        resolve_auth(auth, {"PRESENT": "x"})
    assert info.value.code == code


def test_auth_headers() -> None:
    env = {"S": "secret", "T": "tok", "K": "key"}
    hmac_auth = resolve_auth({"type": "hmac", "secret_key": "S"}, env)
    assert hmac_auth is not None
    assert hmac_auth.header_for("5", b"{}") == ("x-iii-Signature", sign("secret", "5", b"{}"))
    bearer = resolve_auth({"type": "bearer", "token_key": "T"}, env)
    assert bearer is not None and bearer.header_for("5", b"") == ("Authorization", "Bearer tok")
    api_key = resolve_auth({"type": "api_key", "header": "X-Key", "value_key": "K"}, env)
    assert api_key is not None and api_key.header_for("5", b"") == ("X-Key", "key")
    assert resolve_auth(None, env) is None
