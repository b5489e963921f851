"""``iii-engine --config tests/fixtures/reference-config.yaml`` (the production engine's test configuration,
docs/guides/engine.md#modules) as a real process: every module it names is served, every named queue accepts an
Enqueue and
runs the job, and an HTTP-invoked function pointing at a local aiohttp endpoint on 127.0.0.1 answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from aiohttp import web
from module_worker import ModuleWorker

from iii_engine.config import load_config
from tests.conftest import EngineProcess
from tests.fixtures.refworker import ref_worker
from tests.integration.modules.hanging_webhook import post_endpoint
from tests.services import logged_port

pytestmark = pytest.mark.our_engine("starts our engine with the production test configuration")

CONFIG = Path(__file__).resolve().parents[2] / "fixtures" / "reference-config.yaml"

# queue -> the payload field naming the FIFO group (None: standard queue)
NAMED_QUEUES: dict[str, str | None] = {
    "default": None, "payment": "transaction_id", "test-orders": None, "test-multi": None, "test-chain": None,
    "test-chain-entry": None, "test-sequential": None, "test-fifo-groups": "group_id",
}


# The reference SDK enqueues payments of one transaction on the FIFO `payment` queue; the second fails once.
REF_PAYMENTS = r'''
attempts = {}

async def pay(data):
    attempts[data["seq"]] = attempts.get(data["seq"], 0) + 1
    if data["seq"] == 1 and attempts[1] == 1:
        emit("failed", seq=1)
        raise RuntimeError("card declined once")
    emit("paid", seq=data["seq"])
    return {"paid": data["seq"]}

iii.register_function("ref.pay", pay)
iii.list_functions()
for seq in range(4):
    attempt("enqueued", lambda seq=seq: iii.trigger({
        "function_id": "ref.pay", "payload": {"transaction_id": "tx-1", "seq": seq},
        "action": TriggerAction.Enqueue(queue="payment")}))
serve()
'''


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP endpoint on 127.0.0.1 that records and echoes JSON bodies."""
    seen: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append({"body": body, "function": request.headers.get("x-iii-Function-Path")})
        return web.json_response({"echo": body})

    async with post_endpoint(hook) as url:
        yield url, seen


@pytest.fixture
async def reference_engine(
    engine_process: Callable[..., Awaitable[EngineProcess]], monkeypatch: pytest.MonkeyPatch
) -> tuple[EngineProcess, int, int]:
    # port 0 and the ports it logged: a port picked here could be another test process's before the engine binds it
    monkeypatch.setenv("III_HTTP_PORT", "0")
    monkeypatch.setenv("STREAMS_PORT", "0")
    monkeypatch.setenv("III_BIND_HOST", "127.0.0.1")
    process = await engine_process("--config", str(CONFIG))
    log = process.log()
    return process, logged_port(log, "REST API"), logged_port(log, "stream socket")


def test_the_file_reproduces_the_production_test_configuration() -> None:
    defaults = load_config(CONFIG, env={})
    assert defaults.port == 49199
    settings = {spec.class_name: spec.config for spec in defaults.modules or []}
    assert settings["modules::api::RestApiModule"]["port"] == 3199
    assert settings["modules::stream::StreamModule"]["port"] == 3112
    queues = settings["modules::queue::QueueModule"]["queue_configs"]
    assert set(queues) == set(NAMED_QUEUES)
    assert {name: (q["max_retries"], q["concurrency"], q["type"], q.get("message_group_field"))
            for name, q in queues.items()} == {
        "default": (3, 5, "standard", None), "payment": (5, 2, "fifo", "transaction_id"),
        "test-orders": (3, 5, "standard", None), "test-multi": (3, 5, "standard", None),
        "test-chain": (3, 5, "standard", None), "test-chain-entry": (3, 5, "standard", None),
        "test-sequential": (3, 1, "standard", None), "test-fifo-groups": (3, 2, "fifo", "group_id"),
    }
    security = settings["modules::http_functions::HttpFunctionsModule"]["security"]
    assert security == {"url_allowlist": ["localhost", "127.0.0.1"], "block_private_ips": False,
                        "require_https": False}
    moved = load_config(CONFIG, env={"III_PORT": "1", "III_HTTP_PORT": "2", "STREAMS_PORT": "3"})
    ports = {spec.class_name: spec.config.get("port") for spec in moved.modules or []}
    assert (moved.port, ports["modules::api::RestApiModule"], ports["modules::stream::StreamModule"]) == (1, 2, 3)


async def test_every_module_is_served(reference_engine: tuple[EngineProcess, int, int]) -> None:
    process, http_port, streams_port = reference_engine
    assert "not available" not in process.log(), process.log()

    async with ModuleWorker(process.url) as worker:
        listed = await worker.result("engine::functions::list", {})
        ids = {f["function_id"] for f in listed["functions"]}
        for builtin in ("state::set", "stream::set", "enqueue", "publish", "iii::queue::redrive"):
            assert builtin in ids, sorted(ids)

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=10) as client:
        assert (await client.get("/no/such/route")).status_code == 404  # the REST API answers on its port
    async with websockets.connect(f"ws://127.0.0.1:{streams_port}/") as stream_socket:
        await stream_socket.send(json.dumps({"type": "join", "data": {"subscriptionId": "s", "streamName": "x",
                                                                      "groupId": "g"}}))
        sync = json.loads(await asyncio.wait_for(stream_socket.recv(), 5))
        assert sync["event"]["type"] == "sync", sync  # the stream socket answers on STREAMS_PORT


async def test_every_named_queue_accepts_an_enqueue(reference_engine: tuple[EngineProcess, int, int]) -> None:
    process, _, _ = reference_engine
    got: asyncio.Queue[Any] = asyncio.Queue()

    async def handle(data: Any) -> dict[str, bool]:
        await got.put(data)
        return {"ok": True}

    async with ModuleWorker(process.url) as worker:
        await worker.function("cfg::handle", handle)
        for queue, group_field in NAMED_QUEUES.items():
            payload: dict[str, Any] = {"queue": queue}
            if group_field is not None:
                payload[group_field] = "g1"
            reply = await worker.call("cfg::handle", payload, action={"type": "enqueue", "queue": queue})
            assert set(reply.get("result") or {}) == {"messageReceiptId"}, (queue, reply)
        ran = {(await asyncio.wait_for(got.get(), 10))["queue"] for _ in NAMED_QUEUES}
        assert ran == set(NAMED_QUEUES)

        no_group = await worker.call("cfg::handle", {"queue": "payment"}, action={"type": "enqueue",
                                                                                  "queue": "payment"})
        assert no_group["error"]["code"] == "enqueue_error" and "transaction_id" in no_group["error"]["message"]


async def test_http_invoked_function_on_localhost(
    reference_engine: tuple[EngineProcess, int, int], endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    process, _, _ = reference_engine
    url, seen = endpoint
    async with ModuleWorker(process.url) as owner, ModuleWorker(process.url) as caller:
        await owner.send({"type": "registerfunction", "id": "cfg::remote",
                          "invocation": {"url": url, "method": "POST", "timeout_ms": 5000}})
        await owner.sync()
        reply = await caller.call("cfg::remote", {"order": 7})
        assert reply["result"]["echo"]["order"] == 7, reply
        assert seen[0]["function"] == "cfg::remote"

        await owner.send({"type": "registerfunction", "id": "cfg::elsewhere",
                          "invocation": {"url": "http://example.com/hook"}})
        await owner.sync()
        refused = await caller.call("cfg::elsewhere", {"order": 8})
        assert "error" in refused and len(seen) == 1, refused
        assert "URL not in allowlist" in process.log()  # refused at registration: example.com is not allowed


@pytest.mark.interop
async def test_reference_sdk_fifo_payments_stay_in_order(
    reference_engine: tuple[EngineProcess, int, int], tmp_path: Path
) -> None:
    process, _, _ = reference_engine
    async with ref_worker(tmp_path, process.url, REF_PAYMENTS) as worker:
        enqueued = await worker.events("enqueued", 4)
        assert all(e["ok"] and set(e["result"]) == {"messageReceiptId"} for e in enqueued), enqueued
        assert (await worker.event("failed"))["seq"] == 1
        # backoff_ms defaults to 1000: the retry of #1 runs after about a second, and #2 and #3 wait for it.
        paid = [p["seq"] for p in await worker.events("paid", 4)]
        assert paid == [0, 1, 2, 3]
