"""The URL of an HTTP-invoked function often carries a secret (``?api_key=``, ``?token=``, a presigned
``X-Amz-Signature``, ``user:password@``). The request goes to the URL as given, but the engine's logs and the errors
that travel back to callers show it masked, and never show the function's header values.

Before: the registration notice (``HTTP-invoked function f -> POST <url>``) and every failure message
(``request to <url> failed: ...``) showed the URL whole; aiohttp's response errors (``..., url='<url>'``) too.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from iii._cli import mask_passwords
from iii_engine import Engine
from tests.integration.engine.raw import RawWorker
from tests.integration.modules.test_http_functions import (  # noqa: F401 - fixtures
    Endpoint,
    _register,
    endpoint,
    engine,
)

pytestmark = [pytest.mark.our_engine("configures HTTP function rules and secrets"), pytest.mark.timeout(30)]

SECRETS = ("s3cret", "t0ken", "pa55", "h3ader")


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: a connection to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
async def garbage_server() -> AsyncIterator[int]:
    """A server answering every request with a response aiohttp refuses to parse (its error quotes the URL)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


def _no_secret_in(text: str) -> None:
    assert not [secret for secret in SECRETS if secret in text], text


def _engine_logs(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured line but the test worker's own (its websockets client logs the frames it sends)."""
    return "\n".join(record.getMessage() for record in caplog.records
                     if not record.name.startswith("websockets.client"))


async def test_a_failed_request_never_shows_the_secret(
        engine: Engine, closed_port: int, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    caplog.set_level(logging.DEBUG)
    worker = await RawWorker.connect(engine.url)
    url = f"http://app:pa55@127.0.0.1:{closed_port}/hook?api_key=s3cret&tenant=acme&Access_Token=t0ken"
    await _register(worker, "ext.down", {"url": url, "headers": {"X-Api-Key": "h3ader"}})
    frame = await worker.call("ext.down", {})
    error = frame["error"]
    assert error["code"] == "http_request_failed"
    assert error["message"].startswith(f"request to http://app:***@127.0.0.1:{closed_port}/hook?api_key=***"
                                       "&tenant=acme&Access_Token=*** failed: "), error
    _no_secret_in(str(error))
    assert f"ext.down -> POST http://app:***@127.0.0.1:{closed_port}/hook?api_key=***" in _engine_logs(caplog)
    _no_secret_in(_engine_logs(caplog))


async def test_a_response_error_quoting_the_url_is_masked(
        engine: Engine, garbage_server: int, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    caplog.set_level(logging.DEBUG)
    worker = await RawWorker.connect(engine.url)
    await _register(worker, "ext.garbage", {"url": f"http://127.0.0.1:{garbage_server}/h?token=s3cret"})
    error = (await worker.call("ext.garbage", {}))["error"]
    assert error["code"] == "http_request_failed", error
    assert "token=***" in error["message"], error
    _no_secret_in(str(error))
    _no_secret_in(_engine_logs(caplog))


async def test_a_refused_registration_never_shows_the_secret(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    caplog.set_level(logging.DEBUG)
    worker = await RawWorker.connect(engine.url)
    await _register(worker, "ext.badport", {"url": "http://127.0.0.1:99999/h?sig=s3cret"})
    assert "ext.badport not registered: url_validation_failed: Invalid URL: cannot parse " \
           "'http://127.0.0.1:99999/h?sig=***'" in _engine_logs(caplog)
    _no_secret_in(_engine_logs(caplog))


async def test_the_request_still_goes_to_the_real_url(engine: Engine, endpoint: Endpoint) -> None:  # noqa: F811
    worker = await RawWorker.connect(engine.url)
    await _register(worker, "ext.keyed", {"url": f"{endpoint.base}/echo?api_key=s3cret&X-Amz-Signature=9f"})
    assert await worker.result_of("ext.keyed", None) == {"got": None}
    assert endpoint.seen[-1]["path"] == "/echo"
    module = engine.module("http_functions")
    assert module is not None
    assert module.functions["ext.keyed"].url.endswith("?api_key=s3cret&X-Amz-Signature=9f")


@pytest.mark.parametrize(("text", "shown"), [
    ("https://h/o?api_key=a&apikey=b&API-KEY=c&x-api-key=d&key=e", "https://h/o?api_key=***&apikey=***&API-KEY=***"
                                                                    "&x-api-key=***&key=***"),
    ("https://h/o?token=a&access_token=b&refreshToken=c&X-Amz-Security-Token=d",
     "https://h/o?token=***&access_token=***&refreshToken=***&X-Amz-Security-Token=***"),
    ("https://h/o?secret=a&client_secret=b&signature=c&sig=d&X-Goog-Signature=e&X-Amz-Credential=f",
     "https://h/o?secret=***&client_secret=***&signature=***&sig=***&X-Goog-Signature=***&X-Amz-Credential=***"),
    ("https://h/o?auth=a&jwt=b&access_key=c&Secret_Key=d&private-key=e",
     "https://h/o?auth=***&jwt=***&access_key=***&Secret_Key=***&private-key=***"),
    ('{"url":"https://h/o?token=a","method":"GET"}', '{"url":"https://h/o?token=***","method":"GET"}'),
])
def test_secret_query_keys_are_masked(text: str, shown: str) -> None:
    assert mask_passwords(text) == shown


@pytest.mark.parametrize("text", [
    "https://h/o?keyspace=app&monkey=1&sslkey=/etc/k.pem&passfile=/p&tokens_left=3&author=me&signed=1&page=2",
    "https://h/o?sigma=1&keys=a,b&authority=x&token_type=bearer",
])
def test_other_query_keys_are_left(text: str) -> None:
    assert mask_passwords(text) == text


def test_masking_time_is_linear() -> None:
    """A worker chooses the URL (up to a frame's size) and the engine masks it at registration: a long run of
    letters took quadratic time (200 000 letters: about 20 s)."""
    for text in ("?" + "a" * 200_000, "a1" * 100_000, "x://a:" * 30_000, "https://h/?token=" + "a" * 200_000,
                 "https://" + "a@" * 100_000, "?token=" + "'" * 200_000 + "x", "?" + "%" * 200_000 + "="):
        begin = time.process_time()  # (CPU time: a loaded machine's wall clock failed it, at 0.33 s of CPU)
        mask_passwords(text)
        assert time.process_time() - begin < 1.0, text[:20]
