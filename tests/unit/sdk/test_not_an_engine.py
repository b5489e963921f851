"""``register_worker`` at a URL whose server answers but is not an iii engine fails at once with an error naming the
URL and the answer, instead of retrying for its whole 30 s wait and saying only "cannot reach the engine"; an engine
not up yet (nothing listening, a 5xx) is still retried."""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection
from websockets.sync.server import serve as ws_serve

from iii import InitOptions, ReconnectionConfig, register_worker
from iii.connection import NOT_AN_ENGINE_TRIES
from iii.iii import III

FAST = ReconnectionConfig(initial_delay_ms=10, max_delay_ms=20, jitter_factor=0.0)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, answer: Callable[[socketserver.BaseRequestHandler], None]) -> None:
        self.answer = answer
        self.connections = 0
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server_address[1]}"


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, _Server)
        server.connections += 1
        server.answer(self)


def _http(status: str) -> Callable[[socketserver.BaseRequestHandler], None]:
    def answer(handler: socketserver.BaseRequestHandler) -> None:
        handler.request.recv(65536)  # the upgrade request
        handler.request.sendall(f"HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno".encode())

    return answer


def _another_protocol(handler: socketserver.BaseRequestHandler) -> None:
    handler.request.recv(65536)
    handler.request.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[socketserver.BaseRequestHandler], None]], _Server]]:
    servers: list[_Server] = []

    def start(answer: Callable[[socketserver.BaseRequestHandler], None]) -> _Server:
        server = _Server(answer)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status", ["200 OK", "426 Upgrade Required", "403 Forbidden"])
def test_an_http_status_no_engine_gives_fails_at_the_first_answer_naming_url_and_status(
        serve: Callable[..., _Server], status: str) -> None:
    server = serve(_http(status))
    started = time.monotonic()
    # The default backoff: before, this retried until register_worker's 30 s wait ran out.
    with pytest.raises(ConnectionError) as raised:
        register_worker(server.url)
    took = time.monotonic() - started
    code = status.split()[0]
    assert str(raised.value).startswith(
        f"{server.url} did not answer as an iii engine: HTTP {code} on the WebSocket upgrade")
    assert took < 5, took
    assert server.connections == 1


def test_a_404_fails_after_a_few_tries_as_a_proxy_without_a_route_yet_answers_it(serve: Callable[..., _Server]) -> None:
    server = serve(_http("404 Not Found"))
    with pytest.raises(ConnectionError) as raised:
        register_worker(server.url, InitOptions(reconnection_config=FAST))
    assert str(raised.value).startswith(
        f"{server.url} did not answer as an iii engine: HTTP 404 on the WebSocket upgrade")
    assert server.connections == NOT_AN_ENGINE_TRIES


def test_a_server_speaking_another_protocol_fails_after_a_few_tries(serve: Callable[..., _Server]) -> None:
    server = serve(_another_protocol)
    with pytest.raises(ConnectionError,
                       match="did not answer as an iii engine: an answer to the WebSocket upgrade that is not HTTP"):
        register_worker(server.url, InitOptions(reconnection_config=FAST))
    assert server.connections == NOT_AN_ENGINE_TRIES


def test_a_5xx_is_retried_as_an_engine_not_ready_is(serve: Callable[..., _Server]) -> None:
    server = serve(_http("503 Service Unavailable"))
    config = ReconnectionConfig(initial_delay_ms=10, max_delay_ms=20, jitter_factor=0.0, max_retries=4)
    with pytest.raises(ConnectionError, match="failed after max retries") as raised:
        register_worker(server.url, InitOptions(reconnection_config=config))
    assert "not an iii engine" not in str(raised.value)
    assert server.connections == 5  # the first attempt and 4 retries


def test_nothing_listening_is_retried_as_before() -> None:
    config = ReconnectionConfig(initial_delay_ms=10, max_delay_ms=20, jitter_factor=0.0, max_retries=3)
    with pytest.raises(ConnectionError, match=r"failed after max retries \(4 attempts.*Connection refused"):
        register_worker("ws://127.0.0.1:1", InitOptions(reconnection_config=config))


def test_once_connected_a_404_is_retried_as_a_proxy_in_front_of_a_restarting_engine_may_give() -> None:
    upgrades = 0
    refused_enough = threading.Event()

    def process_request(conn: ServerConnection, request: Request) -> Response | None:
        nonlocal upgrades
        upgrades += 1
        if upgrades == 1:
            return None
        if upgrades == 1 + 2 * NOT_AN_ENGINE_TRIES:
            refused_enough.set()
        return conn.respond(404, "no engine here now\n")

    def handler(ws: ServerConnection) -> None:
        ws.send('{"type":"workerregistered","worker_id":"w1"}')
        ws.close()  # the engine goes away; what answers next is not one

    with ws_serve(handler, "127.0.0.1", 0, process_request=process_request) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        client = III(f"ws://127.0.0.1:{server.socket.getsockname()[1]}", InitOptions(reconnection_config=FAST))
        try:
            assert refused_enough.wait(10)
            assert client.get_connection_state() != "failed"
            assert client._conn.not_an_engine is None
        finally:
            client.shutdown()
