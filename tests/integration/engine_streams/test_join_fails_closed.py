"""A ``stream:join`` handler that fails (or whose condition fails) refuses the join with an ``error`` event,
``join_failed``: before, a failure counted as "allowed", and the client got the group's sync (a handler reading
``ctx["user"]`` from a missing auth context gave any client another user's data). Attack on the stream socket."""

from __future__ import annotations

from typing import Any

import pytest

from iii_engine import Engine

from .helpers import SocketClient, Worker, WorkerError, engine_config, stream_module, trigger_active

pytestmark = pytest.mark.our_engine("refuses a join whose stream:join handler failed (ours)")


async def _broken(_: Any) -> Any:
    raise WorkerError("invocation_failed", "KeyError: 'user'")


async def _refuse(_: Any) -> Any:
    return {"unauthorized": True}


@pytest.mark.parametrize("failing", ["handler", "condition"])
async def test_a_join_whose_handler_failed_is_refused_and_gets_no_sync(failing: str) -> None:
    async with Engine(config=engine_config()) as engine:
        socket = stream_module(engine).socket
        assert socket is not None
        worker = await Worker.connect(engine.url)
        await worker.result("stream::set", {"stream_name": "gated", "group_id": "alice", "item_id": "k",
                                            "data": {"secret": "alice-only"}})
        config: dict[str, Any] = {"stream_name": "gated"}
        if failing == "handler":
            await worker.register("gate", _broken)
        else:
            await worker.register("gate", _refuse)
            await worker.register("gate_condition", _broken)
            config["condition_function_id"] = "gate_condition"
        await trigger_active(engine, await worker.trigger("stream:join", "gate", config))
        client = await SocketClient.connect(engine)
        await client.join("a", "gated", "alice")
        frame = await client.recv()
        assert frame["event"]["type"] == "error" and frame["event"]["code"] == "join_failed", frame
        assert ("condition gate_condition" if failing == "condition" else "handler gate") in frame["event"]["message"]
        assert "user" not in frame["event"]["message"]  # the code only: the error's text is for the log
        assert not any(c.subscriptions for c in socket._clients)
        await worker.result("stream::set", {"stream_name": "gated", "group_id": "alice", "item_id": "k", "data": 2})
        await client.nothing_for(0.3)  # no event of the group either
        await client.close()
        await worker.close()
