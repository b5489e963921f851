"""SSRF rules of HTTP-invoked functions (issue #8): every IANA special-purpose range, with its boundaries, the
IPv4 address carried by every IPv6 form that embeds one, one host for the rules and the client, bounded responses."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web
from http_fake_services import HttpFakeServices

from iii.wire import dumps
from iii_engine.modules.base import EngineError
from iii_engine.modules.http import security as http_security
from iii_engine.modules.http.functions import HttpFunctionsModule
from iii_engine.modules.http.security import UrlRejected, UrlRules, blocked_reason, embedded_ipv4, is_blocked_ip

# (range, first address inside, last address inside, an address just outside or None when the neighbour is
# itself blocked). The outside neighbours are public unicast addresses.
V4_RANGES = [
    ("0.0.0.0/8", "0.0.0.0", "0.255.255.255", "1.0.0.0"),
    ("10.0.0.0/8", "10.0.0.0", "10.255.255.255", "11.0.0.0"),
    ("100.64.0.0/10", "100.64.0.0", "100.127.255.255", "100.63.255.255"),
    ("127.0.0.0/8", "127.0.0.0", "127.255.255.255", "128.0.0.0"),
    ("169.254.0.0/16", "169.254.0.0", "169.254.255.255", "169.253.255.255"),
    ("172.16.0.0/12", "172.16.0.0", "172.31.255.255", "172.32.0.0"),
    ("192.0.0.0/24", "192.0.0.0", "192.0.0.255", "192.0.1.0"),
    ("192.0.2.0/24", "192.0.2.0", "192.0.2.255", "192.0.3.0"),
    ("192.31.196.0/24", "192.31.196.0", "192.31.196.255", "192.31.197.0"),
    ("192.52.193.0/24", "192.52.193.0", "192.52.193.255", "192.52.192.255"),
    ("192.88.99.0/24", "192.88.99.0", "192.88.99.255", "192.88.100.0"),
    ("192.168.0.0/16", "192.168.0.0", "192.168.255.255", "192.169.0.0"),
    ("192.175.48.0/24", "192.175.48.0", "192.175.48.255", "192.175.49.0"),
    ("198.18.0.0/15", "198.18.0.0", "198.19.255.255", "198.20.0.0"),
    ("198.51.100.0/24", "198.51.100.0", "198.51.100.255", "198.51.101.0"),
    ("203.0.113.0/24", "203.0.113.0", "203.0.113.255", "203.0.114.0"),
    ("224.0.0.0/4", "224.0.0.0", "239.255.255.255", "223.255.255.255"),
    ("240.0.0.0/4", "240.0.0.0", "255.255.255.254", None),
    ("255.255.255.255/32", "255.255.255.255", "255.255.255.255", None),
]

V6_RANGES = [
    ("::/128", "::", "::", None),
    ("::1/128", "::1", "::1", None),
    ("::ffff:0:0/96", "::ffff:0.0.0.0", "::ffff:255.255.255.255", None),
    ("64:ff9b::/96", "64:ff9b::", "64:ff9b::ffff:ffff", None),
    ("64:ff9b:1::/48", "64:ff9b:1::", "64:ff9b:1:ffff:ffff:ffff:ffff:ffff", None),
    ("100::/64", "100::", "100::ffff:ffff:ffff:ffff", None),
    ("2001::/23", "2001::", "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", "2001:200::"),
    ("2001:db8::/32", "2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db9::"),
    ("2002::/16", "2002::", "2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "2003::"),
    ("fc00::/7", "fc00::", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
    ("fe80::/10", "fe80::", "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
    ("fec0::/10", "fec0::", "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
    ("ff00::/8", "ff00::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
]


def _cases(table: list[tuple[str, str, str, str | None]]) -> Iterator[Any]:
    for network, first, last, _ in table:
        yield pytest.param(network, first, id=f"{network}-first")
        yield pytest.param(network, last, id=f"{network}-last")


@pytest.mark.parametrize("network, address", list(_cases(V4_RANGES)) + list(_cases(V6_RANGES)))
def test_every_special_purpose_range_is_blocked_at_both_ends(network: str, address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert ip in ipaddress.ip_network(network)
    reason = blocked_reason(ip)
    assert reason is not None and is_blocked_ip(ip)
    assert str(ip) in reason


@pytest.mark.parametrize("outside", [o for *_, o in V4_RANGES + V6_RANGES if o is not None] + [
    "8.8.8.8", "1.1.1.1", "100.128.0.0", "2606:4700:4700::1111", "2001:4860:4860::8888", "2a00:1450::1"])
def test_public_neighbours_pass(outside: str) -> None:
    assert blocked_reason(ipaddress.ip_address(outside)) is None


@pytest.mark.parametrize("address, fragment", [
    ("100.100.100.200", "100.64.0.0/10"),   # Alibaba Cloud metadata
    ("169.254.169.254", "169.254.0.0/16"),  # AWS / GCP / Azure metadata
    ("fd00:ec2::254", "fc00::/7"),          # AWS metadata over IPv6
])
def test_cloud_metadata_addresses(address: str, fragment: str) -> None:
    reason = blocked_reason(ipaddress.ip_address(address))
    assert reason is not None and fragment in reason


@pytest.mark.parametrize("address, carried", [
    ("::ffff:10.0.0.1", "10.0.0.1"),                      # IPv4-mapped
    ("::ffff:8.8.8.8", "8.8.8.8"),                        # mapped public: still refused, range is special
    ("::10.0.0.1", "10.0.0.1"),                           # IPv4-compatible (deprecated)
    ("::8.8.8.8", "8.8.8.8"),
    ("64:ff9b::a9fe:a9fe", "169.254.169.254"),            # NAT64 well-known prefix
    ("64:ff9b::808:808", "8.8.8.8"),
    ("64:ff9b:1::7f00:1", "127.0.0.1"),                   # local-use NAT64, /96 layout
    ("64:ff9b:1:7f00:0:100::", "127.0.0.1"),                  # local-use NAT64, /48 layout (u-octet skipped)
    ("2002:a00:1::1", "10.0.0.1"),                        # 6to4
    ("2002:6464:64c8::1", "100.100.100.200"),
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "10.0.0.1"),  # Teredo, client 10.0.0.1 (obfuscated)
])
def test_ipv6_forms_embedding_ipv4_are_blocked_and_name_the_ipv4(address: str, carried: str) -> None:
    ip = ipaddress.IPv6Address(address)
    assert ipaddress.IPv4Address(carried) in embedded_ipv4(ip)
    reason = blocked_reason(ip)
    assert reason is not None and carried in reason


def test_teredo_server_is_extracted_too() -> None:
    carried = embedded_ipv4(ipaddress.IPv6Address("2001:0:4136:e378:8000:63bf:3fff:fdd2"))
    assert {ipaddress.IPv4Address("65.54.227.120"), ipaddress.IPv4Address("192.0.2.45")} <= set(carried)


@pytest.mark.parametrize("address", ["fe80::1%eth0", "4000::1", "5f00::1", "3fff::1", "e000::1"])
def test_ipv6_outside_global_unicast_is_blocked(address: str) -> None:
    assert is_blocked_ip(ipaddress.ip_address(address))


def test_private_addresses_in_error_detail_not_message() -> None:
    with pytest.raises(UrlRejected) as info:
        UrlRules(require_https=False).check_literal("http://[64:ff9b::a00:1]/")
    assert str(info.value) == "Private IP blocked"
    assert "10.0.0.1" in info.value.detail and "64:ff9b::/96" in info.value.detail


@pytest.mark.parametrize("host, carried", [("2130706433", "127.0.0.1"), ("0x7f.1", "127.0.0.1"),
                                           ("0177.0.0.1", "127.0.0.1"), ("127.1", "127.0.0.1")])
def test_legacy_numeric_ipv4_hosts_are_judged_as_the_address_they_mean(host: str, carried: str) -> None:
    with pytest.raises(UrlRejected, match=r"^Private IP blocked$") as info:
        UrlRules(require_https=False).check_literal(f"http://{host}/")
    assert carried in info.value.detail


class FakeDns:
    """Stands in for ``loop.getaddrinfo``: answers from a script and counts the lookups."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.lookups = 0

    async def __call__(self, host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        self.lookups += 1
        addresses = self.answers[min(self.lookups, len(self.answers)) - 1]
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses]


async def test_resolve_refuses_when_any_answer_is_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    dns = FakeDns(["8.8.8.8", "64:ff9b::a9fe:a9fe"])
    monkeypatch.setattr(http_security, "_getaddrinfo", dns)
    with pytest.raises(UrlRejected, match=r"^Private IP blocked$") as info:
        await UrlRules().resolve("evil.example", 443)
    assert "evil.example" in info.value.detail and "169.254.169.254" in info.value.detail
    assert dns.lookups == 1


async def test_resolve_returns_exactly_the_vetted_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    dns = FakeDns(["8.8.8.8", "2001:4860:4860::8888"], ["127.0.0.1"])
    monkeypatch.setattr(http_security, "_getaddrinfo", dns)
    answers = await UrlRules().resolve("good.example", 8443)
    assert [(family, host, port) for family, host, port in answers] == [
        (socket.AF_INET, "8.8.8.8", 8443), (socket.AF_INET6, "2001:4860:4860::8888", 8443)]
    assert dns.lookups == 1


async def test_opt_in_resolves_private_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_security, "_getaddrinfo", FakeDns(["127.0.0.1"]))
    answers = await UrlRules(block_private_ips=False).resolve("localhost", 80)
    assert answers == [(socket.AF_INET, "127.0.0.1", 80)]


async def test_slow_dns_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    never = asyncio.Event()

    async def hang(*_: Any, **__: Any) -> list[Any]:
        await never.wait()
        return []

    monkeypatch.setattr(http_security, "_getaddrinfo", hang)
    monkeypatch.setattr(http_security, "DNS_TIMEOUT_S", 0.05)
    with pytest.raises(UrlRejected, match=r"^DNS lookup failed$") as info:
        await UrlRules().resolve("slow.example", 443)
    assert "timed out" in info.value.detail


@pytest.fixture
async def big_server() -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.Response:
        size = int(request.query["size"])
        body = dumps("x" * (size - 2)).encode()  # a JSON string of exactly `size` bytes
        if request.query.get("chunked"):
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            for start in range(0, len(body), 1000):
                await response.write(body[start:start + 1000])
            await response.write_eof()
            return response  # type: ignore[return-value]
        if request.query.get("gzip"):  # small on the wire, `size` bytes once decompressed
            return web.Response(body=gzip.compress(body), content_type="application/json",
                                headers={"Content-Encoding": "gzip"})
        return web.Response(body=body, content_type="application/json", status=int(request.query.get("status", 200)))

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    await runner.cleanup()


@pytest.fixture
async def module() -> AsyncIterator[HttpFunctionsModule]:
    mod = HttpFunctionsModule(HttpFakeServices(), {"security": {
        "url_allowlist": ["*"], "block_private_ips": False, "require_https": False}}, env={})
    await mod.start()
    yield mod
    await mod.stop()


@pytest.mark.parametrize("url, fragment", [
    ("http://127.0.0.1:80\\@evil.example/", "cannot parse"),       # urlsplit: evil.example; client: refuses
    ("http://127\u30020\u30020\u30021:8/", "'127.0.0.1' to the HTTP client"),  # ideographic full stops
])
async def test_the_rules_and_the_client_must_read_the_same_host(module: HttpFunctionsModule, url: str,
                                                                fragment: str) -> None:
    with pytest.raises(EngineError) as info:
        await module.register_external("fn", {"url": url}, "w1")
    assert info.value.code == "url_validation_failed"
    assert info.value.message.startswith("Invalid URL: ") and fragment in info.value.message
    assert module.functions == {}


@pytest.mark.parametrize("mode", ["", "chunked=1", "gzip=1"])
async def test_response_bodies_are_bounded(module: HttpFunctionsModule, big_server: str, mode: str) -> None:
    module.max_response_bytes = 4096
    await module.register_external("small", {"url": f"{big_server}?size=4096&{mode}", "method": "GET"}, "w1")
    await module.register_external("big", {"url": f"{big_server}?size=4097&{mode}", "method": "GET"}, "w1")
    assert len(await module.call("small", None)) == 4094
    with pytest.raises(EngineError) as info:
        await module.call("big", None)
    assert info.value.code == "result_not_sent"  # as our SDK answers a worker's result over max_message_size
    assert "larger than 4096 bytes, the engine's limit (max_message_size)" in info.value.message


async def test_a_failed_response_over_the_bound_is_a_failure_not_an_unsent_result(module: HttpFunctionsModule,
                                                                                  big_server: str) -> None:
    """A 5xx whose body is over the bound is ``http_error``: as ``result_not_sent`` a queue counted its job done
    (re-attack on the queue's handling of that code)."""
    module.max_response_bytes = 4096
    await module.register_external("failing", {"url": f"{big_server}?size=8000&status=500", "method": "GET"}, "w1")
    with pytest.raises(EngineError) as info:
        await module.call("failing", None)
    assert info.value.code == "http_error" and "HTTP 500" in info.value.message, info.value.body()
