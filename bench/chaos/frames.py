"""Malformed control-socket frames of every kind, reproducibly from a seeded ``random.Random``.

Attackers only ever name functions and triggers under ``fuzz::`` so that last-writer-wins registration (a
protocol rule, not a fault) never steals the legitimate workers' ``chaos::*`` functions.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from typing import Any

from iii.iii_types import MessageType

# One valid frame per message type (docs/protocol.md#messages); wrong-type variants replace one field at a time.
TEMPLATES: dict[str, dict[str, Any]] = {
    MessageType.REGISTER_FUNCTION.value: {"id": "fuzz::f", "description": "d", "request_format": None,
                                          "response_format": None, "metadata": {"k": 1}, "invocation": None},
    MessageType.UNREGISTER_FUNCTION.value: {"id": "fuzz::f"},
    MessageType.REGISTER_SERVICE.value: {"id": "fuzz::svc", "name": "n", "description": "d",
                                         "parent_service_id": None},
    MessageType.INVOKE_FUNCTION.value: {"function_id": "fuzz::missing", "data": {"a": 1},
                                        "invocation_id": "00000000-0000-4000-8000-000000000000",
                                        "traceparent": None, "baggage": None, "action": None},
    MessageType.INVOCATION_RESULT.value: {"invocation_id": "00000000-0000-4000-8000-000000000000",
                                          "function_id": "fuzz::f", "result": {"r": 1}, "error": None},
    MessageType.REGISTER_TRIGGER_TYPE.value: {"id": "fuzz::tt", "description": "d"},
    MessageType.REGISTER_TRIGGER.value: {"id": "fuzz::t", "trigger_type": "fuzz::tt", "function_id": "fuzz::f",
                                         "config": {}},
    MessageType.UNREGISTER_TRIGGER.value: {"id": "fuzz::t", "trigger_type": "fuzz::tt"},
    MessageType.UNREGISTER_TRIGGER_TYPE.value: {"id": "fuzz::tt"},
    MessageType.TRIGGER_REGISTRATION_RESULT.value: {"id": "fuzz::t", "trigger_type": "fuzz::tt",
                                                    "function_id": "fuzz::f", "result": None, "error": None},
    MessageType.WORKER_REGISTERED.value: {"worker_id": "fuzz-worker"},
    "ping": {},
    "pong": {},
}

WRONG_VALUES: list[Any] = [1, -1, 1.5, True, False, None, [], {}, "", [1, "a"], {"a": {"b": None}},
                           2**70, -(2**64), "x" * 5000, "\u0000\ud7ff\uffff", ["fuzz::f"]]


def _fresh(rng: random.Random, msg_type: str) -> dict[str, Any]:
    out = dict(TEMPLATES[msg_type])
    for key in ("id", "function_id"):
        if key in out and isinstance(out[key], str) and out[key].startswith("fuzz::"):
            out[key] = f"{out[key]}{rng.randrange(1000)}"
    if "invocation_id" in out:
        out["invocation_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    out["type"] = msg_type
    return out


def wrong_type(rng: random.Random) -> tuple[str, bytes]:
    """A valid frame of some message type with one field (or ``type``) given a wrong-typed value."""
    msg_type = rng.choice(list(TEMPLATES))
    frame = _fresh(rng, msg_type)
    key = rng.choice(list(frame))
    frame[key] = rng.choice(WRONG_VALUES)
    if frame.get("type") != msg_type and key != "type":
        frame["type"] = msg_type
    return f"wrong_type:{msg_type}", json.dumps(frame).encode()


def missing_field(rng: random.Random) -> tuple[str, bytes]:
    """A frame missing one of its keys."""
    msg_type = rng.choice(list(TEMPLATES))
    frame = _fresh(rng, msg_type)
    frame.pop(rng.choice(list(frame)))
    return f"missing_field:{msg_type}", json.dumps(frame).encode()


def broken_json(rng: random.Random) -> tuple[str, bytes]:
    """A valid frame cut short, or with a byte flipped to JSON syntax."""
    text = json.dumps(_fresh(rng, rng.choice(list(TEMPLATES)))).encode()
    cut = rng.randrange(1, max(2, len(text)))
    if rng.random() < 0.5:
        return "broken_json", text[:cut]
    return "broken_json", text[:cut] + rng.choice([b"{", b"]", b",", b":", b"\"", b"}}", b"\\"]) + text[cut:]


def bad_envelope(rng: random.Random) -> tuple[str, bytes]:
    """Top level not an object, ``type`` missing, unknown or not a string."""
    choices: list[Any] = [[], [1, 2], 1, "ping", None, True, {}, {"type": None}, {"type": 7},
                          {"type": ["ping"]}, {"type": "nosuchtype"}, {"type": "PING"}, {"type": ""}]
    return "bad_envelope", json.dumps(rng.choice(choices)).encode()


def random_bytes(rng: random.Random) -> tuple[str, bytes]:
    """Binary garbage (sometimes with a telemetry prefix)."""
    data = rng.randbytes(rng.randrange(0, 2048))
    if rng.random() < 0.3:
        data = rng.choice([b"OTLP", b"MTRC", b"LOGS"]) + data
    return "random_bytes", data


def random_text(rng: random.Random) -> tuple[str, bytes]:
    """Printable garbage that is not JSON."""
    return "random_text", bytes(rng.randrange(32, 127) for _ in range(rng.randrange(1, 512)))


def deep_nesting(rng: random.Random) -> tuple[str, bytes]:
    """Deeply nested arrays/objects, alone or as ``data`` of an invocation."""
    depth = rng.choice([1000, 10_000, 100_000])
    nested = "[" * depth + "]" * depth if rng.random() < 0.5 else '{"a":' * depth + "1" + "}" * depth
    if rng.random() < 0.5:
        return "deep_nesting", nested.encode()
    frame = json.dumps(_fresh(rng, "invokefunction"))
    return "deep_nesting", frame.replace('{"a": 1}', nested).encode()


def nan_infinity(rng: random.Random) -> tuple[str, bytes]:
    """NaN/Infinity where JSON allows none, sometimes with a >19-digit integer (which changes the parser)."""
    token = rng.choice(["NaN", "Infinity", "-Infinity"])
    big = rng.random() < 0.5
    data = f'{{"x":{token},"big":{"1" * 25}}}' if big else f'{{"x":{token}}}'
    target = rng.choice(["fuzz::missing", "chaos::a"])  # chaos::a: the engine must not forward it as is
    frame = (f'{{"type":"invokefunction","function_id":"{target}","invocation_id":"{uuid.uuid4()}",'
             f'"data":{data}}}')
    if rng.random() < 0.3:
        frame = (f'{{"type":"invocationresult","invocation_id":"{uuid.uuid4()}","function_id":"fuzz::f",'
                 f'"result":{data}}}')
    return "nan_bigint" if big else "nan_infinity", frame.encode()


def big_ints(rng: random.Random) -> tuple[str, bytes]:
    """Integers far beyond 64 bits in every position, including ids and timeouts."""
    n = "9" * rng.choice([19, 20, 40, 4000])
    frame = rng.choice([
        f'{{"type":"invokefunction","function_id":"fuzz::missing","invocation_id":"{uuid.uuid4()}","data":{n}}}',
        f'{{"type":"invokefunction","function_id":{n},"data":null}}',
        f'{{"type":"registerfunction","id":"fuzz::big","metadata":{{"n":{n}}}}}',
        f'{{"type":{n}}}',
    ])
    return "big_ints", frame.encode()


def invalid_utf8(rng: random.Random) -> tuple[str, bytes]:
    """A text frame that is not UTF-8 (the WebSocket layer closes that connection with 1007)."""
    return "invalid_utf8", b'{"type":"ping","x":"' + b"\xff\xfe\xc0" + b'"}'


def legit_shaped(rng: random.Random) -> tuple[str, bytes]:
    """Well-formed invocations of the legitimate function with odd but valid data (the engine must route)."""
    data: Any = rng.choice([None, 0, "", [], {"deep": [[[]]]}, "\u2603" * 100, 2**70])
    frame = {"type": "invokefunction", "function_id": "chaos::a", "invocation_id": str(uuid.uuid4()),
             "data": data}
    return "legit_shaped", json.dumps(frame).encode()


Generator = Callable[[random.Random], tuple[str, bytes]]

# (generator, weight, sent as binary?) — text frames unless the kind is binary by nature.
KINDS: list[tuple[Generator, int, bool]] = [
    (wrong_type, 30, False),
    (missing_field, 10, False),
    (broken_json, 15, False),
    (bad_envelope, 8, False),
    (random_bytes, 8, True),
    (random_text, 8, False),
    (deep_nesting, 1, False),
    (nan_infinity, 6, False),
    (big_ints, 6, False),
    (invalid_utf8, 1, False),
    (legit_shaped, 3, False),
]


def next_frame(rng: random.Random) -> tuple[str, bytes, bool]:
    """``(kind, payload, binary)`` for one malformed frame."""
    gens = [k[0] for k in KINDS]
    weights = [k[1] for k in KINDS]
    index = rng.choices(range(len(gens)), weights)[0]
    kind, payload = gens[index](rng)
    return kind, payload, KINDS[index][2]
