"""Stream names starting with ``__iii_`` are the engine's own: no ``stream::*`` function, stream trigger or stream
socket join reaches them, and ``stream::list_all`` leaves them out.

Before: with the state and stream modules on one SQL ``store_url`` (SQLite or PostgreSQL), the state module's items
(kept under the stream name ``__iii_state``) were the stream side's too: after ``state::set`` of secrets/api_key,
``stream::list_groups("__iii_state")`` answered ``['secrets']``, ``stream::get`` the value, a ``stream::set`` changed
what ``state::get`` answered, and a plain stream socket client joining ``__iii_state`` was sent the value in its sync.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec, ModuleStartError
from iii_engine.cli import main
from iii_engine.modules.base import EngineError
from iii_engine.modules.bridge.stores import BridgeStreamStore
from iii_engine.modules.stream.settings import StreamSettings
from iii_engine.settings import ConfigError
from tests.polling import until

from .helpers import Recorder, SocketClient, Worker, registered, stream_module, trigger_active

pytestmark = [pytest.mark.our_engine("the stream module refuses the engine's reserved stream names"),
              pytest.mark.timeout(30)]

SECRET = "s3cr3t"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store both modules can share (memory stores are one per module; Redis keeps state apart by its layout):
    a new SQLite file, or the module's scratch PostgreSQL database (``pg_url``)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[Engine]:
    modules = [ModuleSpec("modules::state::StateModule", {"store_url": store_url}),
               ModuleSpec("modules::stream::StreamModule", {"store_url": store_url, "host": "127.0.0.1", "port": 0})]
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=modules)) as running:
        yield running


@pytest.fixture
async def worker(engine: Engine) -> AsyncIterator[Worker]:
    w = await Worker.connect(engine.url)
    yield w
    await w.close()


@pytest.fixture
async def scope(worker: Worker) -> str:
    """A state scope of the test's own (the PostgreSQL database is the module's), holding api_key = SECRET."""
    name = f"secrets-{uuid.uuid4().hex[:8]}"
    await worker.result("state::set", {"scope": name, "key": "api_key", "value": SECRET})
    return name


def _refused(error: dict[str, Any], code: str, name: str = "__iii_state") -> None:
    assert error["code"] == code, error
    assert f"stream name {name!r} is reserved" in error["message"], error
    assert "state module" in error["message"], error


async def test_stream_functions_refuse_the_state_modules_stream(worker: Worker, scope: str) -> None:
    key = {"stream_name": "__iii_state", "group_id": scope, "item_id": "api_key"}
    _refused(await worker.error("stream::get", key), "STREAM_GET_ERROR")
    _refused(await worker.error("stream::list", {"stream_name": "__iii_state", "group_id": scope}),
             "STREAM_GET_GROUP_ERROR")
    _refused(await worker.error("stream::list_groups", {"stream_name": "__iii_state"}), "STREAM_LIST_GROUPS_ERROR")
    _refused(await worker.error("stream::set", {**key, "data": "overwritten"}), "STREAM_SET_ERROR")
    _refused(await worker.error("stream::update", {**key, "ops": [{"type": "set", "path": "", "value": "x"}]}),
             "STREAM_UPDATE_ERROR")
    _refused(await worker.error("stream::delete", key), "STREAM_DELETE_ERROR")
    _refused(await worker.error("stream::send", {"stream_name": "__iii_state", "group_id": scope, "type": "t",
                                                 "data": 1}), "STREAM_SEND_ERROR")
    # any name of the prefix, not only the state module's
    _refused(await worker.error("stream::set", {**key, "stream_name": "__iii_other", "data": 1}), "STREAM_SET_ERROR",
             "__iii_other")

    # the state is as it was, and the state module works on
    assert await worker.result("state::get", {"scope": scope, "key": "api_key"}) == SECRET
    await worker.result("state::update", {"scope": scope, "key": "n", "ops": [{"type": "increment", "path": "count",
                                                                                "by": 2}]})
    assert sorted(map(str, await worker.result("state::list", {"scope": scope}))) == [SECRET, "{'count': 2}"]
    assert scope in (await worker.result("state::list_groups", {}))["groups"]
    assert (await worker.result("state::delete", {"scope": scope, "key": "n"})) is not None
    # names that merely hold the prefix later on, or a near miss, are the user's
    for name in ("todos__iii_state", "_iii_state", "__iii"):
        await worker.result("stream::set", {"stream_name": name, "group_id": "g", "item_id": "i", "data": 1})
        assert await worker.result("stream::get", {"stream_name": name, "group_id": "g", "item_id": "i"}) == 1


async def test_list_all_leaves_the_engines_streams_out(worker: Worker, scope: str) -> None:
    await worker.result("stream::set", {"stream_name": "todos", "group_id": "g", "item_id": "i", "data": 1})
    listed = await worker.result("stream::list_all", {})
    names = [entry["id"] for entry in listed["stream"]]
    assert "todos" in names, listed
    assert not [name for name in names if name.startswith("__iii_")], listed
    assert listed["count"] == len(names)


async def test_a_socket_join_of_the_state_modules_stream_is_refused(engine: Engine, worker: Worker,
                                                                    scope: str) -> None:
    joins = Recorder()
    await worker.register("reserved::on_join", joins)
    await trigger_active(engine, await worker.trigger("stream:join", "reserved::on_join", {}))
    client = await SocketClient.connect(engine)
    try:
        await client.join("x", "__iii_state", scope)
        refused = await client.recv()
        assert (refused["streamName"], refused["groupId"], refused["id"]) == ("__iii_state", scope, None)
        assert refused["event"]["type"] == "error" and refused["event"]["code"] == "invalid_join", refused
        assert "stream name '__iii_state' is reserved" in refused["event"]["message"], refused
        assert SECRET not in str(refused)
        await client.join("y", "__iii_state", scope, "api_key")
        assert (await client.recv())["event"]["code"] == "invalid_join"
        # the socket goes on: a join of the user's stream is synced, and its handler is the only one called
        todos = f"todos-{uuid.uuid4().hex[:8]}"  # (the PostgreSQL database is the module's)
        await client.join("z", todos, "g")
        assert (await client.recv())["event"] == {"type": "sync", "data": []}
        assert [p["stream_name"] for p in joins.payloads] == [todos]
        # a state write reaches no socket client (the state store publishes no event; no join of it stands)
        await worker.result("state::set", {"scope": scope, "key": "api_key", "value": "next"})
        await worker.result("stream::set", {"stream_name": todos, "group_id": "g", "item_id": "i", "data": 1})
        assert (await client.recv())["event"] == {"type": "create", "data": 1}
    finally:
        await client.close()


async def test_stream_triggers_naming_a_reserved_stream_are_refused(engine: Engine, worker: Worker,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="iii_engine")
    await worker.register("reserved::on", Recorder())
    refused = {
        "rs-change": ("stream", {"stream_name": "__iii_state"}),
        "rs-join": ("stream:join", {"stream_name": "__iii_state"}),
        "rs-leave": ("stream:leave", {"stream_name": "__iii_state", "group_id": "g"}),
    }
    for trigger_id, (kind, config) in refused.items():
        await worker.trigger(kind, "reserved::on", config, trigger_id)
    await trigger_active(engine, await worker.trigger("stream", "reserved::on", {"stream_name": "todos"}, "rs-ok"))
    await trigger_active(engine, await worker.trigger("stream:join", "reserved::on", {}, "rs-any-join"))
    listed = {t["id"] for t in (await worker.result("engine::triggers::list", {}))["triggers"]}
    assert {"rs-ok", "rs-any-join"} <= listed and not listed & set(refused), listed
    lines = [r.getMessage() for r in caplog.records if "invalid_trigger_config" in r.getMessage()]
    for trigger_id in refused:
        assert any(f"trigger {trigger_id}: stream name '__iii_state' is reserved" in line for line in lines), \
            (trigger_id, lines)


async def test_a_bridge_streams_health_probe_still_reaches_the_remote() -> None:
    """The stream module's health probe reads ``__iii_health``: through a Bridge that is the remote's
    ``stream::get``, which answers it (nothing can be written there)."""
    back_modules = [ModuleSpec("modules::stream::StreamModule", {"store_url": "memory://", "host": "127.0.0.1",
                                                                  "port": 0}),
                    ModuleSpec("modules::pubsub::PubSubModule", {})]
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=back_modules)) as back:
        bridge = {"class": "modules::stream::adapters::Bridge", "config": {"bridge_url": back.url}}
        front_modules = [ModuleSpec("modules::stream::StreamModule", {"adapter": bridge, "host": "127.0.0.1",
                                                                       "port": 0})]
        async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=front_modules)) as front:
            store = stream_module(front).store
            assert isinstance(store, BridgeStreamStore)
            await until(lambda: store.link.connected)
            health = await stream_module(front).health()
            assert health["stream"]["status"] == "healthy", health
            back_worker = await Worker.connect(back.url)
            try:
                health_key = {"stream_name": "__iii_health", "group_id": "__iii_health", "item_id": "__iii_health"}
                assert await back_worker.result("stream::get", health_key) is None
                _refused(await back_worker.error("stream::get", {**health_key, "item_id": "other"}),
                         "STREAM_GET_ERROR", "__iii_health")
            finally:
                await back_worker.close()


async def test_a_workers_functions_for_a_reserved_stream_are_never_called(engine: Engine, worker: Worker) -> None:
    """A worker may register ``stream::get(__iii_health)`` (registrations are not refused), but the engine never
    calls it: the health probe's read stays on the store. Before, the worker answered the probe ({"pwned": true}),
    and once it left every later probe failed: "served by a worker (create_stream) and its serving worker is gone"
    (a Bridge front's stream health unhealthy for good)."""
    health_key = {"stream_name": "__iii_health", "group_id": "__iii_health", "item_id": "__iii_health"}
    squatter = await Worker.connect(engine.url)
    recorder = Recorder({"pwned": True})
    try:
        for op in ("get", "set", "list", "list_groups"):
            await squatter.register(f"stream::{op}(__iii_health)", recorder)
        await registered(engine, "stream::list_groups(__iii_health)")
        assert await worker.result("stream::get", health_key) is None
    finally:
        await squatter.close()
    await until(lambda: not engine.has_function("stream::get(__iii_health)"))
    assert await worker.result("stream::get", health_key) is None  # before: stream_unavailable
    assert recorder.payloads == []
    assert (await stream_module(engine).health())["stream"]["status"] == "healthy"


async def test_a_workers_stream_get_of_the_health_item_cannot_answer_a_bridge_front_s_probe() -> None:
    """The back engine's ``stream::get`` reads the health item from its store: a worker of the back engine that
    registers ``stream::get(__iii_health)`` (and the other ops) is never asked, and its leaving leaves the front's
    health as it was."""
    back_modules = [ModuleSpec("modules::stream::StreamModule", {"store_url": "memory://", "host": "127.0.0.1",
                                                                  "port": 0})]
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=back_modules)) as back:
        squatter = await Worker.connect(back.url)
        recorder = Recorder({"pwned": True})
        for op in ("get", "set", "update", "delete", "list", "list_groups"):
            await squatter.register(f"stream::{op}(__iii_health)", recorder)
        await registered(back, "stream::list_groups(__iii_health)")
        bridge = {"class": "modules::stream::adapters::Bridge", "config": {"bridge_url": back.url}}
        front_modules = [ModuleSpec("modules::stream::StreamModule", {"adapter": bridge, "host": "127.0.0.1",
                                                                       "port": 0})]
        async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=front_modules)) as front:
            store = stream_module(front).store
            assert isinstance(store, BridgeStreamStore)
            await until(lambda: store.link.connected)
            for _ in range(3):
                health = await stream_module(front).health()
                assert health["stream"]["status"] == "healthy", health
            await squatter.close()
            await until(lambda: not back.has_function("stream::get(__iii_health)"))
            health = await stream_module(front).health()
            assert health["stream"]["status"] == "healthy", health  # before 11b46974: served by a worker now gone
            assert (await stream_module(back).health())["stream"]["status"] == "healthy"
        assert recorder.payloads == []


RESERVED_SETTING = ("custom_streams: stream name '__iii_state' is reserved: names starting with '__iii_' hold the "
                    "engine's own data")


def test_custom_streams_naming_a_reserved_stream_is_refused() -> None:
    """Before: ``custom_streams: [__iii_state]`` was accepted and did nothing (a worker's stream::<op>(__iii_...)
    is never called)."""
    with pytest.raises(ConfigError) as caught:
        StreamSettings.parse({"custom_streams": ["todos", "__iii_state"]})
    assert str(caught.value).startswith(RESERVED_SETTING), caught.value
    assert caught.value.path == "custom_streams" and "\n" not in str(caught.value)
    assert StreamSettings.parse({"custom_streams": ["todos", "_iii_state"]}).custom_streams == {"todos", "_iii_state"}


async def test_custom_streams_naming_a_reserved_stream_stops_the_start() -> None:
    modules = [ModuleSpec("modules::pubsub::PubSubModule"),
               ModuleSpec("modules::stream::StreamModule", {"store_url": "memory://", "host": "127.0.0.1",
                                                             "port": 0, "custom_streams": ["__iii_state"]})]
    with pytest.raises(ModuleStartError) as failure:
        async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=modules)):
            pass
    message = str(failure.value)
    assert message.startswith("module modules::stream::StreamModule cannot start: modules[1].config."
                              f"{RESERVED_SETTING}"), message
    assert "\n" not in message


@pytest.fixture
def _root_level() -> Iterator[None]:
    # main sets the root logger's level for the process it owns; give the other tests theirs back
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


@pytest.mark.usefixtures("_root_level")
def test_the_cli_says_the_reserved_custom_stream_in_one_line(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "engine.yaml"
    config.write_text("modules:\n  - class: modules::stream::StreamModule\n"
                      "    config: {host: 127.0.0.1, port: 0, store_url: 'memory://', custom_streams: [__iii_state]}\n")
    assert main(["--port", "0", "--config", str(config), "--log-level", "ERROR"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("iii-engine: module modules::stream::StreamModule: modules[0].config."
                               f"{RESERVED_SETTING}"), lines


async def test_no_path_calls_a_workers_function_for_a_reserved_stream() -> None:
    """Every path to a worker's ``stream::<op>(NAME)`` refuses a reserved NAME with the op's error, the worker never
    asked: the stream::* functions and the socket's joins check the name first, and the lookup itself (``_custom``)
    refuses it too, so the socket's sync reads (``read_item``, ``read_group_text``) called without that check do
    not reach the worker. Before, they called it (``{'pwned': True}`` as the item)."""
    modules = [ModuleSpec("modules::stream::StreamModule", {"store_url": "memory://", "host": "127.0.0.1",
                                                            "port": 0})]
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=modules)) as engine:
        squatter, caller = await Worker.connect(engine.url), await Worker.connect(engine.url)
        recorder = Recorder({"pwned": True, "new_value": 1, "old_value": None})
        client = await SocketClient.connect(engine)
        try:
            for op in ("get", "set", "update", "delete", "list", "list_groups"):
                await squatter.register(f"stream::{op}(__iii_x)", recorder)
            await registered(engine, "stream::list_groups(__iii_x)")
            item = {"stream_name": "__iii_x", "group_id": "g", "item_id": "i"}
            calls = {"stream::get": (item, "STREAM_GET_ERROR"),
                     "stream::set": ({**item, "data": 1}, "STREAM_SET_ERROR"),
                     "stream::update": ({**item, "ops": []}, "STREAM_UPDATE_ERROR"),
                     "stream::delete": (item, "STREAM_DELETE_ERROR"),
                     "stream::list": ({"stream_name": "__iii_x", "group_id": "g"}, "STREAM_GET_GROUP_ERROR"),
                     "stream::list_groups": ({"stream_name": "__iii_x"}, "STREAM_LIST_GROUPS_ERROR")}
            for function_id, (payload, code) in calls.items():
                _refused(await caller.error(function_id, payload), code, "__iii_x")
            await client.join("a", "__iii_x", "g", "i")
            assert (await client.recv())["event"]["code"] == "invalid_join"
            await client.join("b", "__iii_x", "g")
            assert (await client.recv())["event"]["code"] == "invalid_join"
            functions = stream_module(engine).functions
            assert functions is not None
            reads: dict[str, tuple[Callable[[], Awaitable[Any]], str]] = {
                "read_item": (lambda: functions.read_item("__iii_x", "g", "i"), "STREAM_GET_ERROR"),
                "read_group_text": (lambda: functions.read_group_text("__iii_x", "g"), "STREAM_GET_GROUP_ERROR"),
                "read_group": (lambda: functions.read_group("__iii_x", "g"), "STREAM_GET_GROUP_ERROR")}
            for name, (read, code) in reads.items():
                with pytest.raises(EngineError) as raised:
                    await read()
                assert raised.value.code == code, (name, raised.value)
                assert "stream name '__iii_x' is reserved" in raised.value.message, (name, raised.value)
            assert recorder.payloads == []
        finally:
            await client.close()
            await caller.close()
            await squatter.close()
