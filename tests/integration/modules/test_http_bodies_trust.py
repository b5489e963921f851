"""REST API request bodies and slow clients (issue #8): whole bodies or 413, deadlines, no starved slots.

A real engine with only the REST API module, a raw worker whose handler hashes what arrives through
``request_body``, and four real HTTP clients (httpx, aiohttp, ``http.client``, curl) sending each body with
Content-Length and with chunked transfer-encoding. Small configured limits and deadlines keep it fast.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import http.client
import json
import os
import shutil
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import websockets

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.http.api import RestApiModule
from iii_engine.modules.http.channels import channel_url
from iii_engine.modules.http.settings import ApiSettings
from iii_engine.settings import ConfigError
from tests.integration.engine.raw import RawWorker
from tests.polling import until

pytestmark = pytest.mark.our_engine("configures the REST API module's body limits")

KiB = 1024
MiB = 1024 * 1024
LIMIT = 6 * MiB + 7  # odd on purpose: off-by-one errors cannot hide behind a round number
ARRIVE = [0, 1, 64 * KiB, 600 * KiB, 5 * MiB, LIMIT - 1, LIMIT]
REFUSE = [LIMIT + 1, 70 * MiB]
CONTENT_TYPES = {"json": "application/json", "raw": "application/octet-stream",
                 "urlencoded": "application/x-www-form-urlencoded", "multipart": "multipart/form-data; boundary=bnd"}
CLIENTS = ["httpx", "aiohttp", "http.client", "curl"]


class Sink:
    """The handler: records every invocation's tag and answers with the length and digest of ``request_body``."""

    def __init__(self, engine: Engine, worker: RawWorker) -> None:
        self.engine = engine
        self.worker = worker
        self.invoked: list[str] = []
        self.headers: list[dict[str, str]] = []  # the request headers each invocation was given
        self.buffered_at_invoke: list[int] = []  # the module's body bytes in memory when each invocation came
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        async for raw in self.worker.ws:
            frame = json.loads(raw)
            if frame.get("type") == "invokefunction":
                self.invoked.append(frame["data"]["query_params"].get("tag", ""))
                self.headers.append(frame["data"]["headers"])
                module = self.engine.module("http_api")
                assert isinstance(module, RestApiModule)
                self.buffered_at_invoke.append(module.buffered_bytes)
                task = asyncio.ensure_future(self._serve(frame))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _serve(self, frame: dict[str, Any]) -> None:
        data = frame["data"]
        digest = hashlib.sha256()
        count = 0
        async with websockets.connect(channel_url(self.engine.url, data["request_body"]),
                                      max_size=None, compression=None) as reader:
            async for chunk in reader:
                assert isinstance(chunk, bytes)
                digest.update(chunk)
                count += len(chunk)
        body = data["body"]
        seen = {"str_len": len(body), "sha": hashlib.sha256(body.encode()).hexdigest()} \
            if isinstance(body, str) else body
        await self.worker.send({"type": "invocationresult", "invocation_id": frame["invocation_id"],
                                "function_id": frame["function_id"],
                                "result": {"body": {"n": count, "sha": digest.hexdigest(), "json": seen}}})


Site = tuple[Engine, RestApiModule, Sink]
Start = Callable[..., Awaitable[Site]]


@pytest.fixture
async def site() -> AsyncIterator[Start]:
    """Factory: engine + REST API module (given settings) + a ``POST /sink`` route served by :class:`Sink`."""
    async with AsyncExitStack() as stack:

        async def start(**settings: Any) -> Site:
            spec = ModuleSpec("modules::api::RestApiModule", {"host": "127.0.0.1", "port": 0, **settings})
            engine = await stack.enter_async_context(
                Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[spec])))
            module = engine.module("http_api")
            assert isinstance(module, RestApiModule), engine.unavailable_modules
            worker = await RawWorker.connect(engine.url)
            await worker.register("sink")
            await worker.send({"type": "registertrigger", "id": "t-sink", "trigger_type": "http",
                               "function_id": "sink", "config": {"api_path": "/sink", "http_method": "POST"}})
            await worker.sync()
            sink = Sink(engine, worker)
            runner = asyncio.ensure_future(sink.run())
            stack.push_async_callback(_stop, runner, worker)
            return engine, module, sink

        yield start


async def _stop(runner: asyncio.Task[None], worker: RawWorker) -> None:
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    await worker.close()


# -- payloads and clients ----------------------------------------------------------------------------------------


def _text(size: int) -> bytes:
    return base64.b64encode(os.urandom(size * 3 // 4 + 3))[:size]


def payload(mode: str, size: int) -> bytes:
    """A body of exactly ``size`` bytes that is valid for ``mode`` whenever the size allows."""
    if mode == "json":
        return b"" if size == 0 else b"7" if size == 1 else b'"' + _text(size - 2) + b'"'
    if mode == "urlencoded":
        return (b"f=" + _text(size))[:size]
    if mode == "multipart":
        head = b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n\r\n'
        tail = b"\r\n--bnd--\r\n"
        if size < len(head) + len(tail):
            return os.urandom(size)
        return head + os.urandom(size - len(head) - len(tail)) + tail
    return os.urandom(size)


def _pieces(body: bytes) -> Iterator[bytes]:
    for start in range(0, len(body), 100_000):
        yield body[start:start + 100_000]


async def _apieces(body: bytes) -> AsyncIterator[bytes]:
    for piece in _pieces(body):
        yield piece


async def send(client: str, url: str, body: bytes, content_type: str, chunked: bool,
               tmp: Path) -> tuple[int, bytes]:
    """POST ``body`` with ``client``; Content-Length unless ``chunked``. Returns status and response body."""
    headers = {"Content-Type": content_type}
    if client == "httpx":
        async with httpx.AsyncClient(timeout=25) as hc:
            r = await hc.post(url, content=_apieces(body) if chunked else body, headers=headers)
            return r.status_code, r.content
    if client == "aiohttp":
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=_apieces(body) if chunked else body, headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=25)) as ar:
                return ar.status, await ar.read()
    if client == "http.client":
        return await asyncio.to_thread(_http_client_post, url, body, headers, chunked)
    assert client == "curl"
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    source = tmp / "body.bin"
    source.write_bytes(body)
    out = tmp / "response.bin"
    args = ["curl", "-sS", "--max-time", "25", "-o", str(out), "-w", "%{http_code}", "-X", "POST",
            "--data-binary", f"@{source}", "-H", f"Content-Type: {content_type}"]
    if chunked:
        args += ["-H", "Transfer-Encoding: chunked"]
    proc = await asyncio.create_subprocess_exec(*args, url, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    return int(stdout), out.read_bytes()


def _http_client_post(url: str, body: bytes, headers: dict[str, str], chunked: bool) -> tuple[int, bytes]:
    host_port, path = url.removeprefix("http://").split("/", 1)
    host, port = host_port.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=25)
    try:
        if chunked:
            conn.request("POST", "/" + path, body=_pieces(body), headers=headers, encode_chunked=True)
        else:
            conn.request("POST", "/" + path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


async def marker(module: RestApiModule, sink: Sink, tag: str) -> None:
    """A small request that must be served; every invocation before it has been recorded once it returns."""
    async with httpx.AsyncClient(timeout=10) as hc:
        r = await hc.post(f"{module.base_url}/sink?tag={tag}", content=b"ok")
    assert r.status_code == 200 and r.json()["n"] == 2
    assert sink.invoked[-1] == tag


# -- every body arrives whole, or 413 before the handler runs ----------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("mode", list(CONTENT_TYPES))
async def test_bodies_up_to_the_limit_arrive_whole(site: Start, tmp_path: Path, mode: str, client: str,
                                                   chunked: bool) -> None:
    _, module, sink = await site(max_body_bytes=LIMIT)
    for size in ARRIVE:
        body = payload(mode, size)
        tag = f"{mode}-{size}"
        status, raw = await send(client, f"{module.base_url}/sink?tag={tag}", body, CONTENT_TYPES[mode], chunked,
                                 tmp_path)
        assert status == 200, (size, raw[:200])
        seen = json.loads(raw)
        assert (seen["n"], seen["sha"]) == (size, hashlib.sha256(body).hexdigest()), size
        if mode == "json":
            expected: Any = None if size == 0 else 7 if size == 1 else {
                "str_len": size - 2, "sha": hashlib.sha256(body[1:-1]).hexdigest()}
            assert seen["json"] == expected, size
        else:
            assert seen["json"] is None
    assert sink.invoked == [f"{mode}-{size}" for size in ARRIVE]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("mode", ["json", "raw", "multipart"])
async def test_bodies_over_the_limit_are_413_and_never_reach_the_handler(site: Start, tmp_path: Path, mode: str,
                                                                         client: str, chunked: bool) -> None:
    _, module, sink = await site(max_body_bytes=LIMIT)
    for size in REFUSE:
        tag = f"over-{size}"
        status, raw = await send(client, f"{module.base_url}/sink?tag={tag}", b"\0" * size, CONTENT_TYPES[mode],
                                 chunked, tmp_path)
        assert status == 413, (size, raw[:200])
        assert str(LIMIT) in raw.decode()  # the message names the limit
        await marker(module, sink, f"after-{size}")
        assert tag not in sink.invoked
    assert module.in_flight == 0


async def raw_request(module: RestApiModule, head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", module.port)
    writer.write(head)
    await writer.drain()
    return reader, writer


def expect_continue(request_head: bytes) -> bytes:
    """``request_head`` with ``Expect: 100-continue`` added."""
    return request_head.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n")


def head(length: int | None, path: str = "/sink") -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\n{framing}\r\n\r\n"
            .encode())


async def test_content_length_over_the_limit_is_413_without_reading_the_body(site: Start) -> None:
    _, module, sink = await site(body_timeout=20_000)  # the default limit: 64 MiB
    assert module.settings.max_body_bytes == 64 * MiB
    reader, writer = await raw_request(module, head(70 * MiB, "/sink?tag=huge"))  # and not one body byte
    status = await asyncio.wait_for(reader.readline(), 5)  # long before the 20 s body deadline
    assert status.startswith(b"HTTP/1.1 413"), status
    writer.close()
    await marker(module, sink, "after")
    assert sink.invoked == ["after"]


async def test_expect_100_continue_gets_413_or_continue(site: Start) -> None:
    _, module, sink = await site(max_body_bytes=LIMIT)
    reader, writer = await raw_request(module, expect_continue(head(LIMIT + 1)))
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 413")
    writer.close()
    reader, writer = await raw_request(module, expect_continue(head(3, "/sink?tag=c")))
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 100")
    assert await asyncio.wait_for(reader.readline(), 5) == b"\r\n"
    writer.write(b"abc")
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
    writer.close()
    assert sink.invoked == ["c"]


async def test_chunked_body_is_refused_as_soon_as_it_crosses_the_limit(site: Start) -> None:
    _, module, sink = await site(max_body_bytes=LIMIT)
    reader, writer = await raw_request(module, head(None, "/sink?tag=flood"))
    chunk = b"\0" * (LIMIT // 4 + 1)
    for _ in range(4):  # one byte past the limit in total; the stream is left open, never terminated
        writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    await writer.drain()
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 413")
    writer.close()
    await marker(module, sink, "after")
    assert sink.invoked == ["after"]


async def test_compressed_bodies_are_limited_and_counted_by_their_decoded_size(site: Start) -> None:
    """aiohttp decodes ``Content-Encoding: gzip``: the limit and the memory budget apply to what is decoded."""
    _, module, sink = await site(max_body_bytes=LIMIT, max_buffered_bytes=LIMIT)
    inside = os.urandom(1000) * 3000  # 3 MB decoded from far fewer bytes on the wire
    bomb = gzip.compress(b"\0" * (70 * MiB))  # about 70 KB on the wire
    async with httpx.AsyncClient(timeout=10) as hc:
        ok = await hc.post(f"{module.base_url}/sink?tag=gz", content=gzip.compress(inside),
                           headers={"Content-Encoding": "gzip"})
        assert ok.status_code == 200
        assert (ok.json()["n"], ok.json()["sha"]) == (len(inside), hashlib.sha256(inside).hexdigest())
        assert sink.buffered_at_invoke[-1] >= len(inside)  # the budget counted the decoded bytes it holds
        # the headers describe the body the handler got (before: content-encoding gzip, the length as sent)
        assert "content-encoding" not in sink.headers[-1]
        assert sink.headers[-1]["content-length"] == str(len(inside))
        refused = await hc.post(f"{module.base_url}/sink?tag=bomb", content=bomb, headers={"Content-Encoding": "gzip"})
        assert refused.status_code == 413, refused.text
    await marker(module, sink, "after")
    assert sink.invoked == ["gz", "after"]
    assert module.buffered_bytes == 0


def _gzip_cut(data: bytes) -> bytes:
    """``data`` gzipped and flushed to a byte boundary, with no last block and no trailer: a stream cut off whose
    bytes so far decode to all of ``data``."""
    packer = zlib.compressobj(wbits=31)
    return packer.compress(data) + packer.flush(zlib.Z_SYNC_FLUSH)


@pytest.mark.parametrize("cut", ["no-last-block", "no-trailer"])
async def test_a_compressed_body_cut_before_its_end_is_400(site: Start, cut: str) -> None:
    _, module, sink = await site(max_body_bytes=LIMIT)
    inside = b"7" * 4000  # a JSON number: any prefix of it parses too
    sent = _gzip_cut(inside[:2000]) if cut == "no-last-block" else gzip.compress(inside)[:-8]
    async with httpx.AsyncClient(timeout=10) as hc:
        refused = await hc.post(f"{module.base_url}/sink?tag=cut", content=sent,
                                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    # before: 200, the handler given the part (2,000 of 4,000 digits; all of them without the checksum)
    assert refused.status_code == 400, refused.text
    assert "not read whole" in refused.json()["error"] and "cut off" in refused.json()["error"], refused.text
    await marker(module, sink, "after")
    assert sink.invoked == ["after"]
    assert module.buffered_bytes == 0


async def test_a_content_encoding_the_engine_does_not_decode_is_415(site: Start) -> None:
    _, module, sink = await site(max_body_bytes=LIMIT)
    async with httpx.AsyncClient(timeout=10) as hc:
        refused = await hc.post(f"{module.base_url}/sink?tag=x", content=b"\x0b\x02\x80{}\x03",
                                headers={"Content-Encoding": "x-unknown"})
        two = await hc.post(f"{module.base_url}/sink?tag=y", content=gzip.compress(b"{}"),
                            headers=[("Content-Encoding", "identity"), ("Content-Encoding", "gzip")])
        plain = await hc.post(f"{module.base_url}/sink?tag=plain", content=b"{}",
                              headers={"Content-Encoding": "identity"})
    # before: both handed on as they were, coded bytes passed for the body
    assert refused.status_code == 415 and "'x-unknown' is not one the engine decodes" in refused.json()["error"]
    assert two.status_code == 415 and "'identity, gzip'" in two.json()["error"], two.text
    assert plain.status_code == 200 and plain.json()["n"] == 2
    assert sink.invoked == ["plain"]


# -- deadlines and slots -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["no-body", "half-body", "trickle", "unterminated-chunked"])
async def test_a_body_that_does_not_arrive_in_time_is_408(site: Start, kind: str) -> None:
    _, module, sink = await site(body_timeout=500, max_body_bytes=LIMIT)
    loop = asyncio.get_running_loop()
    started = loop.time()
    reader, writer = await raw_request(module, head(None if kind == "unterminated-chunked" else 100,
                                                    f"/sink?tag={kind}"))
    if kind == "half-body":
        writer.write(b"x" * 50)
    elif kind == "unterminated-chunked":
        writer.write(b"5\r\nhello\r\n")

    async def trickle() -> None:  # one byte every 50 ms: always active, never done within the deadline
        for _ in range(99):
            writer.write(b"x")
            await asyncio.sleep(0.05)

    trickling = asyncio.ensure_future(trickle()) if kind == "trickle" else None
    status = await asyncio.wait_for(reader.readline(), 5)
    elapsed = loop.time() - started
    if trickling is not None:
        trickling.cancel()
    writer.close()
    assert status.startswith(b"HTTP/1.1 408"), status
    assert 0.45 <= elapsed < 3, elapsed
    await marker(module, sink, "after")
    assert sink.invoked == ["after"]
    assert module.receiving == 0


async def test_idle_body_connections_do_not_starve_legitimate_requests(site: Start) -> None:
    limit, idle = 4, 60
    _, module, sink = await site(concurrency_request_limit=limit, body_timeout=20_000, max_body_bytes=LIMIT)
    connections = []
    for n in range(idle):  # headers (and for half of them one byte), then silence
        reader, writer = await raw_request(module, expect_continue(head(1000, f"/sink?tag=idle{n}")))
        # "100 Continue" proves the engine is waiting for this body: no sleep needed to know they all are.
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 100")
        if n % 2:
            writer.write(b"x")
        connections.append(writer)
    assert module.receiving == idle
    assert module.in_flight == 0  # waiting for a body holds no concurrency slot
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with httpx.AsyncClient(timeout=10) as hc:
        responses = await asyncio.gather(*(hc.post(f"{module.base_url}/sink?tag=ok{n}", content=b"hello")
                                           for n in range(2 * limit)))
    assert [r.status_code for r in responses] == [200] * (2 * limit)
    assert loop.time() - started < 5  # far below the 20 s body deadline the idle ones are still waiting out
    assert not [t for t in sink.invoked if t.startswith("idle")]
    for writer in connections:
        writer.close()


async def test_slow_headers_are_cut_off_and_do_not_block_others(site: Start) -> None:
    # 1.5 s, not less: the header deadline also runs for the marker request's own connection, which this process
    # (client and server in one, under a loaded full run) may be slow to write its headers on
    _, module, sink = await site(header_timeout=1500)
    loop = asyncio.get_running_loop()
    started = loop.time()
    reader, writer = await asyncio.open_connection("127.0.0.1", module.port)
    writer.write(b"POST /sink HTTP/1.1\r\nHost: t\r\n")

    async def cut_off() -> tuple[bytes, float]:
        """What the server sent on the slow connection and when it ended it. A reset is the server cutting it off
        too: a header line not yet read when the server closes makes the kernel reset the connection instead of
        ending it (seen 1.50 s in, at the deadline, in 1 of 10 runs of this file with -n 2 beside two CPU hogs;
        before, that failed the test with ConnectionResetError, also 1 in 10). Read from the start, not after the
        marker: the end is timed when it comes, not after however long the marker took under load, and lines
        trickled after a clean close cannot turn it into a reset before it is read."""
        got = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                got += chunk
        return got, loop.time()

    ended = asyncio.ensure_future(cut_off())

    async def trickle() -> None:  # a header line every 50 ms, never the blank line that ends the headers
        for n in range(400):
            if ended.done():
                return
            writer.write(b"X-Slow-%d: y\r\n" % n)
            await asyncio.sleep(0.05)

    trickling = asyncio.ensure_future(trickle())
    await marker(module, sink, "meanwhile")
    data, at = await asyncio.wait_for(ended, 8)  # the server ends the connection
    elapsed = at - started
    trickling.cancel()
    writer.close()
    assert not data.startswith(b"HTTP/1.1 2"), data
    assert 1.45 <= elapsed < 5, elapsed  # at the deadline, not extended by the bytes that kept coming
    assert sink.invoked == ["meanwhile"]


async def test_a_silent_connection_is_closed_by_the_header_deadline(site: Start) -> None:
    _, module, _ = await site(header_timeout=300)
    reader, writer = await asyncio.open_connection("127.0.0.1", module.port)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_bodies_in_memory_are_bounded_and_overflow_fails_fast(site: Start) -> None:
    """Bodies that together exceed ``max_buffered_bytes``: the one that would cross it is 503, the first arrives."""
    _, module, sink = await site(max_body_bytes=1000, max_buffered_bytes=1500, body_timeout=5000)
    first_reader, first = await raw_request(module, expect_continue(head(1000, "/sink?tag=first")))
    assert (await asyncio.wait_for(first_reader.readline(), 5)).startswith(b"HTTP/1.1 100")
    assert module.buffered_bytes == 0  # claimed as bytes arrive, not as stated
    first.write(b"a" * 600)
    await until(lambda: module.buffered_bytes == 600)
    async with httpx.AsyncClient(timeout=10) as hc:
        second = await hc.post(f"{module.base_url}/sink?tag=second", content=b"b" * 1000)
        assert second.status_code == 503 and "1500" in second.text  # 600 + 1000 > 1500
        assert second.headers["retry-after"] == "1"
        chunked = await hc.post(f"{module.base_url}/sink?tag=chunked", content=_apieces(b"c" * 950))
        assert chunked.status_code == 503  # counted as it arrives: 600 + 950 > 1500
        first.write(b"a" * 400)
        assert await asyncio.wait_for(first_reader.readline(), 5) == b"\r\n"
        assert (await asyncio.wait_for(first_reader.readline(), 5)).startswith(b"HTTP/1.1 200")
        first.close()
        again = await hc.post(f"{module.base_url}/sink?tag=again", content=b"b" * 1000)
        assert again.status_code == 200 and again.json()["n"] == 1000
    assert sink.invoked == ["first", "again"]
    assert module.buffered_bytes == 0


async def test_stated_lengths_without_bytes_do_not_hold_the_budget(site: Start) -> None:
    """Before: a stated Content-Length was claimed up front, so four connections stating the largest body and
    sending nothing made every other request with a body a 503 for ``body_timeout``."""
    _, module, sink = await site(max_body_bytes=1000, max_buffered_bytes=1500, body_timeout=5000)
    silent = [await raw_request(module, head(1000, f"/sink?tag=silent{n}")) for n in range(4)]
    async with httpx.AsyncClient(timeout=10) as hc:
        answer = await hc.post(f"{module.base_url}/sink?tag=real", content=b"r" * 1000)
        assert answer.status_code == 200, answer.text
    assert sink.invoked == ["real"]
    for _, writer in silent:
        writer.close()


# -- settings ------------------------------------------------------------------------------------------------------


def test_body_settings_defaults_and_errors() -> None:
    s = ApiSettings.parse({})
    assert (s.max_body_bytes, s.body_timeout_ms, s.header_timeout_ms, s.max_buffered_bytes) == (
        64 * MiB, 30_000, 30_000, 256 * MiB)
    for bad, named in [({"max_body_bytes": 0}, "max_body_bytes"), ({"body_timeout": "1s"}, "body_timeout"),
                       ({"header_timeout": 0}, "header_timeout"), ({"max_buffered_bytes": True}, "max_buffered_bytes"),
                       ({"max_body_bytes": 10, "max_buffered_bytes": 5}, "max_buffered_bytes")]:
        with pytest.raises(ConfigError, match=f"^{named}: "):
            ApiSettings.parse(bad)


async def test_a_coding_refused_is_refused_before_100_continue(site: Start) -> None:
    _, module, sink = await site(max_body_bytes=LIMIT)
    reader, writer = await asyncio.open_connection("127.0.0.1", module.port)
    try:
        writer.write(b"POST /sink?tag=x HTTP/1.1\r\nHost: x\r\nContent-Encoding: br\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readline(), 10)
        # before: "HTTP/1.1 100 Continue", then the 415 once the body came, sent for nothing
        assert head.startswith(b"HTTP/1.1 415"), head
    finally:
        writer.close()
    assert sink.invoked == []
