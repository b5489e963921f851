"""Stream socket under a storm: many clients connecting, joining and going at random moments (during the auth
call, during the ``stream:join`` handlers, during the sync read, right after a join whose sync is big).

The contract (docs/protocol.md ST12): every join the ``stream:join`` handlers heard of and did not refuse gets
exactly one ``stream:leave``; once every client is gone the socket holds nothing for them (clients, the group
index, the store's event feed, engine calls in flight, tasks).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import json
import os
import random
import uuid
from typing import Any

import pytest
import websockets

from iii_engine import Engine
from tests.polling import until

from .helpers import Worker, engine_config, registered, stream_module, trigger_active

pytestmark = pytest.mark.our_engine("counts the stream socket's joins and leaves under random disconnects")

CLIENTS = int(os.environ.get("RSS_STORM_CLIENTS", "400"))  # thousands by hand; 400 keeps the test near 1 s
AT_ONCE = 60
BIG = "x" * 200_000


class _Hooks:
    """The worker's side: an auth function naming each client, join handlers that answer at random moments (or
    not at all), sync reads of a worker-served stream that answer late, and a leave handler that counts."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.heard: collections.Counter[tuple[str, str]] = collections.Counter()
        self.left: collections.Counter[tuple[str, str]] = collections.Counter()
        self.release = asyncio.Event()

    async def _pause(self, *, hang: bool = True) -> None:
        roll = self.rng.random()
        if roll < 0.5:
            return
        if roll < 0.9 or not hang:
            await asyncio.sleep(self.rng.random() * 0.02)
            return
        await self.release.wait()  # past join_timeout_ms: the engine drops the late answer

    async def auth(self, data: Any) -> Any:
        await self._pause(hang=False)  # a hung one holds its client until the handshake times out
        return {"context": {"client": data["query_params"]["c"][0]}}

    async def join(self, data: Any) -> Any:
        self.heard[(data["context"]["client"], data["subscription_id"])] += 1
        await self._pause()
        return None

    async def leave(self, data: Any) -> Any:
        self.left[(data["context"]["client"], data["subscription_id"])] += 1
        return None

    async def sync(self, _: Any) -> Any:
        await self._pause()
        return []


async def _one_client(url: str, name: str, big: str, rng: random.Random) -> None:
    """Connect, send a few joins (and maybe a leave), go at a random moment: cleanly or by dropping the TCP
    connection."""
    async def run() -> None:
        async with websockets.connect(f"{url}?c={name}", compression=None, open_timeout=5) as ws:
            for n in range(rng.randint(1, 4)):
                stream = rng.choice(("mem", "cust", big))
                data = {"subscriptionId": f"s{n}", "streamName": stream, "groupId": rng.choice(("g1", "g2"))}
                await ws.send(json.dumps({"type": "join", "data": data}))
                if rng.random() < 0.2:
                    await ws.send(json.dumps({"type": "leave", "data": data}))
            await asyncio.sleep(rng.random() * 0.03)
            if rng.random() < 0.5:
                ws.transport.abort()

    task = asyncio.ensure_future(run())
    # a fifth go within 50 ms, often still in the handshake (the auth call); the rest go as run() says
    done, _ = await asyncio.wait([task], timeout=rng.random() * 0.05 if rng.random() < 0.2 else None)
    if not done:
        task.cancel()
    with contextlib.suppress(Exception, asyncio.CancelledError):  # the many ways a dropped client ends
        await task


def _store_url(store: str) -> str:
    if store == "memory":
        return "memory://"
    from tests.services import require_redis

    return require_redis()


@pytest.mark.parametrize(("store", "seed"), [("memory", 1), ("memory", 2), pytest.param("redis", 3,
                                                                                      marks=pytest.mark.redis)])
async def test_random_disconnects_keep_exactly_one_leave_per_join_and_leave_nothing_behind(store: str,
                                                                                          seed: int) -> None:
    """With Redis, the store's event feed (opened by a join, shielded from its client's disconnect, closed with
    the last client) opens and closes many times over, at random moments."""
    rng = random.Random(seed)
    big = f"big-{uuid.uuid4().hex}"  # its items are the store's; on Redis, deleted at the end
    async with Engine(config=engine_config(auth_function="auth", join_timeout_ms=200, custom_streams=["cust"],
                                           store_url=_store_url(store))) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        hooks = _Hooks(rng)
        worker = await Worker.connect(engine.url)
        for function_id, handler in (("auth", hooks.auth), ("gate", hooks.join), ("left", hooks.leave),
                                     ("stream::list(cust)", hooks.sync)):
            await worker.register(function_id, handler)
            await registered(engine, function_id)
        await trigger_active(engine, await worker.trigger("stream:join", "gate", {}))
        await trigger_active(engine, await worker.trigger("stream:leave", "left", {}))
        for group in ("g1", "g2"):
            for item in range(10):
                await worker.result("stream::set", {"stream_name": big, "group_id": group, "item_id": str(item),
                                                    "data": BIG})
        tasks_before = len(asyncio.all_tasks())
        url = socket.url
        limit = asyncio.Semaphore(AT_ONCE)

        async def bounded(n: int) -> None:
            async with limit:
                await _one_client(url, f"c{n}", big, random.Random(rng.random()))

        await asyncio.gather(*(bounded(n) for n in range(CLIENTS)))
        await until(lambda: not socket._clients and not socket._accepted, within=15)  # auth calls' too
        hooks.release.set()  # the hung handlers answer now: late, dropped
        await until(lambda: not engine.invocations.pending, within=10)
        await until(lambda: sum(hooks.left.values()) >= sum(hooks.heard.values()), within=10)
        # every leave the socket fired has run its handler: none can come later (no client is left to cause one)
        await until(lambda: not socket.leave_triggers._tasks and not engine.invocations.pending, within=10)
        assert len(hooks.heard) > CLIENTS // 2, f"{len(hooks.heard)} joins reached the handlers: too few to test"
        doubled = {key: n for key, n in hooks.left.items() if n != 1}
        missing = set(hooks.heard) - set(hooks.left)
        unheard = set(hooks.left) - set(hooks.heard)
        assert not doubled and not missing and not unheard, (doubled, missing, unheard)
        assert not socket._watchers and not socket.following and engine.fired_calls.in_flight == 0

        def no_contexts() -> bool:  # auth answers of upgrades never served: weakly held, gone with their sockets
            gc.collect()
            return not socket._contexts

        await until(no_contexts)
        await until(lambda: len(asyncio.all_tasks()) <= tasks_before, within=5)
        for group in ("g1", "g2"):
            for item in range(10):
                await worker.result("stream::delete", {"stream_name": big, "group_id": group, "item_id": str(item)})
        await worker.close()
