"""A stream-socket message the engine cannot act on is answered with an ``error`` event naming what is wrong.

Before, a join whose ``id`` was an object, whose ``subscriptionId`` was a number, NaN or a 5,000-digit integer, a
frame that was JSON but no object, binary or not UTF-8 got no answer at all (one rate-limited INFO line in the
engine): the client waited for a sync that never came. Refusals for a name too long or too many subscriptions
already answered with an ``error`` event; these now do too, in the same shape.
"""

from __future__ import annotations

import json

import pytest

from iii_engine import Engine

from .helpers import SocketClient, engine_config

pytestmark = pytest.mark.our_engine("answers the stream socket's malformed messages")


def _join(**data: object) -> str:
    return json.dumps({"type": "join", "data": data})


GOOD = {"subscriptionId": "a", "streamName": "s", "groupId": "g"}

# (what is sent, the error code, a part of its message, the (streamName, groupId, id) echoed back)
CASES: list[tuple[str | bytes, str, str, tuple[str | None, str | None, str | None]]] = [
    (_join(**GOOD, id={"x": 1}), "invalid_join", "data.id must be a string or left out, got an object",
     ("s", "g", None)),
    (_join(**GOOD, id=7), "invalid_join", "data.id must be a string or left out, got a number", ("s", "g", None)),
    (_join(**{**GOOD, "subscriptionId": 7}), "invalid_join", "data.subscriptionId must be a string, got a number",
     ("s", "g", None)),
    (_join(**{**GOOD, "subscriptionId": 7}, id="i"), "invalid_join", "data.subscriptionId must be a string",
     ("s", "g", "i")),
    ('{"type":"join","data":{"subscriptionId":NaN,"streamName":"s","groupId":"g"}}', "invalid_message",
     "unreadable as JSON", (None, None, None)),
    ('{"type":"join","data":{"subscriptionId":1' + "0" * 5000 + ',"streamName":"s","groupId":"g"}}',
     "invalid_message", "unreadable as JSON", (None, None, None)),
    (_join(streamName="s", groupId="g"), "invalid_join", "data.subscriptionId is missing", ("s", "g", None)),
    ('{"type":"join"}', "invalid_join", "data is missing", (None, None, None)),
    ('{"type":"join","data":[1]}', "invalid_join", "data must be an object, got an array", (None, None, None)),
    (json.dumps({"type": "leave", "data": {"subscriptionId": "a", "groupId": ["g"]}}), "invalid_leave",
     "data.streamName is missing", (None, None, None)),
    ("[1, 2]", "invalid_message", "got an array", (None, None, None)),
    ("5", "invalid_message", "got a number", (None, None, None)),
    ('"join"', "invalid_message", "got a string", (None, None, None)),
    ("null", "invalid_message", "got null", (None, None, None)),
    ('{"type":"explode","data":{}}', "invalid_message", "got type 'explode'", (None, None, None)),
    ('{"data":{}}', "invalid_message", "got an object without type", (None, None, None)),
    ("{nope", "invalid_message", "unreadable as JSON", (None, None, None)),
    (b"\x00\xff" * 10, "invalid_message", "unreadable as JSON", (None, None, None)),
    (b'{"type":"join"}\xff', "invalid_message", "unreadable as JSON", (None, None, None)),
    ('{"type":"join","data":{"subscriptionId":"\\ud800","streamName":"s","groupId":"g"}}', "invalid_message",
     "unpaired surrogate", (None, None, None)),
]


async def test_each_malformed_message_gets_an_error_event_and_the_socket_goes_on() -> None:
    async with Engine(config=engine_config()) as engine:
        client = await SocketClient.connect(engine)
        for sent, code, says, names in CASES:
            await client.ws.send(sent)
            frame = await client.recv(2)  # before: nothing came (TimeoutError)
            event = frame["event"]
            assert (event["type"], event["code"]) == ("error", code), (sent[:80], frame)
            assert says in event["message"], (sent[:80], event["message"])
            assert (frame["streamName"], frame["groupId"], frame["id"]) == names, (sent[:80], frame)
        await client.ws.send("   ")  # whitespace alone is skipped, as production does
        await client.join("ok", "s", "g")  # every frame before it was answered; a good join still goes through
        assert (await client.recv())["event"] == {"type": "sync", "data": []}
        await client.close()
