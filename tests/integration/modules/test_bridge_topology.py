"""The bridge topology as real processes started from config files alone: ``iii-engine --config
tests/fixtures/bridge-back.yaml`` and ``… bridge-front.yaml`` on free ports. The front's state and stream modules
keep their data on the back (Bridge adapters); its bridge client module forwards, exposes and invokes.

Checked: the production SDK tests' state and stream matrix (the Bridge section of README.md) through the front answers
exactly as
the back does directly, with our SDK and with the reference SDK; stream socket clients of the front get change
events; the front survives a restart of the back and, while the back is down, fails fast with an error naming it;
bad bridge settings stop the engine start with one line.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import websockets

from iii import III
from iii.errors import InvocationError
from tests.conftest import ROOT, EngineProcess
from tests.fixtures.refworker import ref_worker
from tests.ports import reserve_port
from tests.services import logged_port

pytestmark = pytest.mark.our_engine("starts two engine processes from config files and restarts one")

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
BACK, FRONT = FIXTURES / "bridge-back.yaml", FIXTURES / "bridge-front.yaml"
StartEngine = Callable[..., Awaitable[EngineProcess]]


def run_matrix(call: Any, stamp: int) -> dict[str, Any]:
    """The upstream bridge-state / bridge-stream cases; ``call(function_id, payload)`` is a blocking SDK call.

    Also sent verbatim to the reference SDK (no imports, no helpers from outside this function).
    """
    out: dict[str, Any] = {}
    scope, key = "bridge-test-scope", "bridge-test-item"
    item = {"stream_name": "bridge-test-stream", "group_id": "bridge-test-group", "item_id": "bridge-test-item"}

    def reset() -> None:
        for function_id, payload in (("state::delete", {"scope": scope, "key": key}), ("stream::delete", item)):
            try:
                call(function_id, payload)
            except Exception:
                pass

    def state(op: str, **payload: Any) -> Any:
        return call("state::" + op, payload)

    def stream(op: str, **payload: Any) -> Any:
        return call("stream::" + op, {**item, **payload})

    reset()
    out["set_new"] = state("set", scope=scope, key=key, value={"name": "Test Item", "value": 42})
    out["stream_set_new"] = stream("set", data={"name": "Test Item", "value": 42})
    reset()
    state("set", scope=scope, key=key, value={"value": 1})
    stream("set", data={"value": 1})
    out["set_twice"] = state("set", scope=scope, key=key, value={"value": 2, "updated": True})
    out["stream_set_twice"] = stream("set", data={"value": 2, "updated": True})
    out["get"] = state("get", scope=scope, key=key)
    out["stream_get"] = stream("get")
    out["get_missing"] = state("get", scope=scope, key="non-existent-item")
    out["stream_get_missing"] = call("stream::get", {**item, "item_id": "non-existent-item"})
    out["delete"] = state("delete", scope=scope, key=key)
    out["stream_delete"] = stream("delete")
    out["get_after_delete"] = state("get", scope=scope, key=key)
    out["stream_get_after_delete"] = stream("get")
    out["delete_missing"] = state("delete", scope=scope, key="non-existent")
    out["stream_delete_missing"] = call("stream::delete", {**item, "item_id": "non-existent"})
    list_scope, list_group = f"bridge-state-{stamp}", f"bridge-stream-{stamp}"
    for n in (1, 2, 3):
        state("set", scope=list_scope, key=f"state-item{n}", value={"id": n, "value": n * 10})
        call("stream::set", {"stream_name": "bridge-test-stream", "group_id": list_group,
                             "item_id": f"stream-item{n}", "data": {"id": n, "value": n * 10}})
    out["list"] = sorted(state("list", scope=list_scope), key=lambda v: v["id"])
    out["stream_list"] = sorted(call("stream::list", {"stream_name": "bridge-test-stream", "group_id": list_group}),
                                key=lambda v: v["id"])
    out["list_groups_has_scope"] = list_scope in state("list_groups")["groups"]
    out["stream_list_groups_has_group"] = list_group in call("stream::list_groups",
                                                             {"stream_name": "bridge-test-stream"})
    out["update"] = state("update", scope=list_scope, key="state-item1",
                          ops=[{"type": "increment", "path": "value", "by": 5}])
    return out


EXPECTED: dict[str, Any] = {
    "set_new": {"old_value": None, "new_value": {"name": "Test Item", "value": 42}},
    "stream_set_new": {"old_value": None, "new_value": {"name": "Test Item", "value": 42}},
    "set_twice": {"old_value": {"value": 1}, "new_value": {"value": 2, "updated": True}},
    "stream_set_twice": {"old_value": {"value": 1}, "new_value": {"value": 2, "updated": True}},
    "get": {"value": 2, "updated": True},
    "stream_get": {"value": 2, "updated": True},
    "get_missing": None,
    "stream_get_missing": None,
    "delete": {"value": 2, "updated": True},
    "stream_delete": {"old_value": {"value": 2, "updated": True}},
    "get_after_delete": None,
    "stream_get_after_delete": None,
    "delete_missing": None,
    "stream_delete_missing": {"old_value": None},
    "list": [{"id": n, "value": n * 10} for n in (1, 2, 3)],
    "stream_list": [{"id": n, "value": n * 10} for n in (1, 2, 3)],
    "list_groups_has_scope": True,
    "stream_list_groups_has_group": True,
    "update": {"old_value": {"id": 1, "value": 10}, "new_value": {"id": 1, "value": 15}},
}


class Topology:
    """Ports and processes of one back + front pair."""

    def __init__(self, start: StartEngine, back_port: int, front_port: int, front_streams: int) -> None:
        self.start = start
        self.back_port, self.front_port, self.front_streams = back_port, front_port, front_streams
        self.back: EngineProcess | None = None
        self.front: EngineProcess | None = None
        # the back's port, held from its kill to its restart: another test process could bind it in between
        self.held: socket.socket | None = None

    @property
    def back_url(self) -> str:
        return f"ws://127.0.0.1:{self.back_port}"

    @property
    def front_url(self) -> str:
        return f"ws://127.0.0.1:{self.front_port}"

    async def start_back(self) -> EngineProcess:
        try:
            self.back = await self.start("--config", str(BACK), "--port", str(self.back_port))
        finally:
            self.release()
        return self.back

    def release(self) -> None:
        if self.held is not None:
            self.held.close()
            self.held = None

    async def start_front(self) -> EngineProcess:
        self.front = await self.start("--config", str(FRONT), "--port", str(self.front_port))
        return self.front

    async def kill_back(self) -> None:
        assert self.back is not None
        self.back.process.kill()
        await self.back.process.wait()
        self.held = reserve_port(self.back_port)


@pytest.fixture
async def topology(engine_process: StartEngine, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Topology]:
    # port 0 everywhere and the ports bound read back: a port picked here and closed could be another test
    # process's before the engine binds it. A restart of the back takes its first port again.
    monkeypatch.setenv("BRIDGE_BACK_STREAMS_PORT", "0")
    monkeypatch.setenv("BRIDGE_FRONT_STREAMS_PORT", "0")
    monkeypatch.setenv("III_BIND_HOST", "127.0.0.1")
    monkeypatch.delenv("III_URL", raising=False)
    back = await engine_process("--config", str(BACK))
    monkeypatch.setenv("BRIDGE_BACK_PORT", str(back.port))  # the front's bridge_url
    front = await engine_process("--config", str(FRONT))
    topo = Topology(engine_process, back.port, front.port, logged_port(front.log(), "stream socket"))
    topo.back, topo.front = back, front
    try:
        yield topo
    finally:
        topo.release()


async def our_client(url: str) -> III:
    client = III(url)
    await client.connect_async()
    return client


async def call(client: III, function_id: str, payload: Any, timeout_ms: int = 10_000) -> Any:
    return await client.trigger_async({"function_id": function_id, "payload": payload, "timeout_ms": timeout_ms})


async def until_bridged(client: III, wait_s: float = 15.0) -> None:
    """Return once a state call through the front succeeds (each failed attempt fails fast by itself)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            await call(client, "state::get", {"scope": "bridge-probe", "key": "k"})
            return
        except InvocationError:
            if time.monotonic() > deadline:
                raise


async def joined(url: str, stream_name: str, subscription_id: str = "s") -> tuple[websockets.ClientConnection, Any]:
    """Join group ``g`` of ``stream_name`` on the stream socket at ``url`` as a client told to re-sync does, and return
    the socket and the sync event's data: a join closed with 1013 is made again (for up to 10 s). The front also sends
    1013 to a client that joined before the link's connection was ready with its ``stream.events`` subscription in
    place (it may have missed events), which a client joining just after ``until_bridged`` can meet."""
    deadline = time.monotonic() + 10.0
    while True:
        ws = await websockets.connect(url)
        await ws.send(json.dumps({"type": "join", "data": {"subscriptionId": subscription_id,
                                                           "streamName": stream_name, "groupId": "g"}}))
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        except websockets.ConnectionClosed as closed:
            if closed.rcvd is None or closed.rcvd.code != 1013 or time.monotonic() > deadline:
                raise
            continue
        assert first["event"]["type"] == "sync", first
        return ws, first["event"].get("data")


async def change_event_after_resync(front: III, url: str, stream_name: str, data: Any) -> dict[str, Any]:
    """Join group ``g`` of ``stream_name`` at ``url``, create an item holding ``data`` through ``front`` and return
    the event of it that the socket client gets, joining again (with a new item) if it is closed with 1013 once.

    Why once: the front's stream store has a link of its own, and ``until_bridged`` saw the state store's link come
    back, not that one. Once the stream link's ``stream.events`` subscription is in place on the new back (its
    registrations-ready, one per connection), the front closes every joined client with 1013, as events sent
    before may have been missed: under CPU load that came 4 ms after ``joined`` had read its sync, before the
    event (1 failure in 10 runs beside two CPU hogs). The 1013 is that awaited sign, and a client told to re-sync
    joins again; a second close after a sync, or no event at all within 10 s, still fails."""
    for attempt in range(2):
        ws, _ = await joined(url, stream_name)
        async with ws:
            item_id = f"item-{attempt}"  # a new item each time: its event is a create, whatever came before
            await call(front, "stream::set", {"stream_name": stream_name, "group_id": "g", "item_id": item_id,
                                              "data": data})
            try:
                event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
            except websockets.ConnectionClosed as closed:
                if attempt or closed.rcvd is None or closed.rcvd.code != 1013:
                    raise
                continue
            assert (event["streamName"], event["groupId"], event["id"]) == (stream_name, "g", item_id), event
            return event
    raise AssertionError("unreachable: the second attempt returns or raises")


async def test_state_and_stream_matrix_through_the_front_equals_the_back(topology: Topology) -> None:
    front, back = await our_client(topology.front_url), await our_client(topology.back_url)
    try:
        await until_bridged(front)

        def blocking(client: III) -> Callable[[str, Any], Any]:
            return lambda function_id, payload: client.trigger({"function_id": function_id, "payload": payload})

        direct = await asyncio.to_thread(run_matrix, blocking(back), 1)
        bridged = await asyncio.to_thread(run_matrix, blocking(front), 2)
        assert direct == EXPECTED
        assert bridged == EXPECTED
        # the data really lives on the back: what the front wrote, the back reads
        assert await call(back, "state::list", {"scope": "bridge-state-2"}) != []
    finally:
        await front.shutdown_async()
        await back.shutdown_async()


REF_MATRIX = "from typing import Any\n" + inspect.getsource(run_matrix) + r'''
def ref_call(function_id, payload):
    return iii.trigger({"function_id": function_id, "payload": payload})

emit("matrix", out=run_matrix(ref_call, int(sys.argv[2])))
serve()
'''


async def test_reference_sdk_matrix_through_the_front(topology: Topology, tmp_path: Path) -> None:
    front = await our_client(topology.front_url)
    try:
        await until_bridged(front)
    finally:
        await front.shutdown_async()
    async with ref_worker(tmp_path, topology.front_url, REF_MATRIX, str(int(time.time() * 1000))) as worker:
        result = (await worker.event("matrix", wait_s=20))["out"]
    assert result == json.loads(json.dumps(EXPECTED))


async def test_front_socket_clients_get_change_events(topology: Topology) -> None:
    front = await our_client(topology.front_url)
    try:
        await until_bridged(front)
        ws, _ = await joined(f"ws://127.0.0.1:{topology.front_streams}/", "ev", "s1")
        async with ws:
            await call(front, "stream::set", {"stream_name": "ev", "group_id": "g", "item_id": "1", "data": {"n": 1}})
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert (event["streamName"], event["groupId"], event["id"], event["event"]) == (
                "ev", "g", "1", {"type": "create", "data": {"n": 1}})
            await call(front, "stream::send", {"stream_name": "ev", "group_id": "g", "type": "ping",
                                               "data": {"x": 1}})
            custom = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert custom["event"] == {"type": "event", "event": {"type": "ping", "data": {"x": 1}}}
    finally:
        await front.shutdown_async()


async def test_front_survives_a_restart_of_the_back(topology: Topology) -> None:
    front = await our_client(topology.front_url)
    try:
        await until_bridged(front)
        await call(front, "state::set", {"scope": "restart", "key": "k", "value": 1})
        await topology.kill_back()

        began = time.monotonic()
        with pytest.raises(InvocationError) as down:
            await call(front, "state::get", {"scope": "restart", "key": "k"}, timeout_ms=25_000)
        took = time.monotonic() - began
        assert down.value.code == "GET_ERROR"
        # The call may reach the link before it notices the back is gone (then the link's loss fails it) or
        # after (then it is refused at once); both name the back and neither waits for the call's timeout.
        assert down.value.message.startswith((
            f"Failed to get value: Failed to get value via bridge: remote engine {topology.back_url} unreachable",
            "Failed to get value: Failed to get value via bridge: connection to remote engine "
            f"{topology.back_url} lost during the call of state::get",
        )), down.value.message
        assert took < 5.0, f"a call while the back is down took {took:.1f} s"
        with pytest.raises(InvocationError) as write:
            await call(front, "state::set", {"scope": "restart", "key": "late", "value": "x"}, timeout_ms=25_000)
        assert write.value.code == "SET_ERROR" and topology.back_url in write.value.message

        await topology.start_back()
        began = time.monotonic()
        await until_bridged(front, wait_s=15.0)
        recovered = time.monotonic() - began
        assert recovered < 10.0
        # the back restarted empty, and the write that failed while it was down never ran there later
        assert await call(front, "state::get", {"scope": "restart", "key": "late"}) is None
        assert await call(front, "state::set", {"scope": "restart", "key": "k", "value": 2}) == {
            "old_value": None, "new_value": 2}
        # the stream event subscription was replayed on the new back too
        event = await change_event_after_resync(front, f"ws://127.0.0.1:{topology.front_streams}/", "r", 7)
        assert event["event"] == {"type": "create", "data": 7}
    finally:
        await front.shutdown_async()


async def test_bridge_client_invoke_forward_expose(topology: Topology) -> None:
    front, back = await our_client(topology.front_url), await our_client(topology.back_url)
    fired: asyncio.Queue[Any] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    try:
        back.register_function("back.echo", lambda data: {"echo": data})
        back.register_function("back.fired", lambda data: loop.call_soon_threadsafe(fired.put_nowait, data))
        front.register_function("front.local", lambda data: {"front_saw": data["n"]})
        await back.list_functions_async()  # the registrations above reached the back
        await front.list_functions_async()
        await until_bridged(front)

        invoked = await call(front, "bridge.invoke", {"function_id": "back.echo", "data": {"a": 1}})
        # the back adds its caller's worker id to object payloads (as for any worker call)
        assert invoked["echo"]["a"] == 1 and set(invoked["echo"]) <= {"a", "_caller_worker_id"}
        forwarded = await call(front, "front.forwarded", {"b": 2})
        assert forwarded["echo"]["b"] == 2
        assert await call(front, "bridge.invoke_async", {"function_id": "back.fired", "data": {"c": 3}}) is None
        assert (await asyncio.wait_for(fired.get(), 5))["c"] == 3

        # the front offers front.local to the back as front.exposed (once its link has registered it)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert await call(back, "front.exposed", {"n": 5}) == {"front_saw": 5}
                break
            except InvocationError as exc:
                if exc.code != "function_not_found" or time.monotonic() > deadline:
                    raise

        with pytest.raises(InvocationError) as missing:
            await call(front, "bridge.invoke", {"function_id": "back.nothing", "timeout_ms": 2000})
        assert missing.value.code == "bridge_error"
        assert missing.value.message.startswith("remote error (function_not_found)")
        with pytest.raises(InvocationError) as bad:
            await call(front, "bridge.invoke", {"data": 1})
        assert (bad.value.code, bad.value.message) == (
            "deserialization_error", "Failed to parse invoke input: missing or non-string field `function_id`")

        await topology.kill_back()
        began = time.monotonic()
        with pytest.raises(InvocationError) as down:
            await call(front, "front.forwarded", {"b": 3}, timeout_ms=25_000)
        assert down.value.code == "bridge_error" and topology.back_url in down.value.message
        with pytest.raises(InvocationError) as down_async:
            await call(front, "bridge.invoke_async", {"function_id": "back.fired"}, timeout_ms=25_000)
        assert down_async.value.code == "bridge_error" and "unreachable" in down_async.value.message
        assert time.monotonic() - began < 10.0
    finally:
        await front.shutdown_async()
        await back.shutdown_async()


async def _failed_start(config: Path) -> str:
    """Start ``iii-engine --config config``; it must exit with 2 (a module entry the file got wrong is a usage error).
    Returns its stderr."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "iii_engine", "--config", str(config),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env=env, cwd=ROOT)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2, err.decode()
    return err.decode()


@pytest.mark.parametrize(("setting", "expected"), [
    ("forward:\n        - local_function: a\n", "modules[0].config.forward[0].remote_function: is required"),
    ("expose:\n        - remote_function: b\n", "modules[0].config.expose[0].local_function: is required"),
    ("url: http://nowhere\n", "modules[0].config.url: engine URL 'http://nowhere' has scheme 'http'"),
])
async def test_bad_bridge_settings_stop_the_start_with_one_line(tmp_path: Path, setting: str,
                                                                expected: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("port: 0\nmodules:\n  - class: modules::bridge_client::BridgeClientModule\n    config:\n"
                      f"      {setting}")
    err = await _failed_start(config)
    lines = [line for line in err.splitlines() if line.startswith("iii-engine:")]
    assert len(lines) == 1, err
    assert lines[0].startswith("iii-engine: module modules::bridge_client::BridgeClientModule: "), lines[0]
    assert expected in lines[0], lines[0]


async def test_bad_bridge_adapter_url_stops_the_start(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("port: 0\nmodules:\n  - class: modules::state::StateModule\n    config:\n      adapter:\n"
                      "        class: modules::state::adapters::Bridge\n        config:\n"
                      "          bridge_url: localhost:1\n")
    err = await _failed_start(config)
    assert "modules[0].config.adapter.config.bridge_url: engine URL 'localhost:1'" in err


async def test_queue_bridge_topic_and_named_enqueue_run_through_the_back(topology: Topology) -> None:
    front, back = await our_client(topology.front_url), await our_client(topology.back_url)
    loop = asyncio.get_running_loop()
    topic_jobs: asyncio.Queue[Any] = asyncio.Queue()
    named_jobs: asyncio.Queue[Any] = asyncio.Queue()
    try:
        front.register_function("front.job", lambda data: loop.call_soon_threadsafe(topic_jobs.put_nowait, data))
        front.register_trigger({"type": "queue", "function_id": "front.job", "config": {"topic": "jobs"}})
        back.register_function("back.job", lambda data: loop.call_soon_threadsafe(named_jobs.put_nowait, data))
        await front.list_functions_async()
        await back.list_functions_async()
        await until_bridged(front)

        # the front's queue trigger is mirrored on the back once its link registered it
        deadline = time.monotonic() + 10
        while not any(t.trigger_type == "queue" and (t.config or {}).get("topic") == "jobs"
                      for t in await back.list_triggers_async()):
            assert time.monotonic() < deadline, "the front's queue trigger never reached the back"
            await back.list_functions_async()  # one round trip to the back between looks
        assert await call(front, "enqueue", {"topic": "jobs", "data": {"n": 1}}) is None
        assert (await asyncio.wait_for(topic_jobs.get(), 10)) == {"n": 1}

        receipt = await front.trigger_async(
            {"function_id": "back.job", "payload": {"m": 2}, "action": {"type": "enqueue", "queue": "bridged"}})
        assert isinstance(receipt["messageReceiptId"], str)
        assert (await asyncio.wait_for(named_jobs.get(), 10))["m"] == 2

        with pytest.raises(InvocationError) as unknown:
            await front.trigger_async({"function_id": "back.job", "payload": {},
                                       "action": {"type": "enqueue", "queue": "nope"}})
        assert "Queue 'nope' not found" in unknown.value.message
        with pytest.raises(InvocationError) as dlq:
            await call(front, "iii::queue::redrive", {"queue": "bridged"})
        assert (dlq.value.code, dlq.value.message) == (
            "redrive_failed", "Failed to redrive DLQ for queue 'bridged': Bridge queue adapter does not support DLQ "
            "operations")

        await topology.kill_back()
        with pytest.raises(InvocationError) as down:
            await call(front, "enqueue", {"topic": "jobs", "data": {"n": 2}}, timeout_ms=25_000)
        assert down.value.code == "enqueue_error" and topology.back_url in down.value.message
    finally:
        await front.shutdown_async()
        await back.shutdown_async()
