"""Every control-socket frame the SDK or the engine sends, each built by exactly one function here.

Builders return the text frame (compact JSON, ``type`` first). Optional envelope keys (``traceparent``,
``baggage``, ``action``, ``invocation_id``) are left out when ``None``, as the production engine does; an
``invocationresult`` carries ``result`` only when there is no ``error`` and the result is not null.

Example:
    >>> invoke_function("math::add", {"a": 1}, invocation_id="i1")
    '{"type":"invokefunction","invocation_id":"i1","function_id":"math::add","data":{"a":1}}'
    >>> invocation_result("i1", "math::add", result=3)
    '{"type":"invocationresult","invocation_id":"i1","function_id":"math::add","result":3}'
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel

from .codec import Encoded, dumps, encode

__all__ = [
    "PING",
    "PONG",
    "invocation_result",
    "invoke_function",
    "register_function",
    "register_service",
    "register_trigger",
    "register_trigger_type",
    "trigger_registration_result",
    "unregister_function",
    "unregister_trigger",
    "unregister_trigger_type",
    "worker_registered",
]

PING: Final = '{"type":"ping"}'
PONG: Final = '{"type":"pong"}'


def invoke_function(
    function_id: str,
    data: Any,
    *,
    invocation_id: str | None = None,
    traceparent: str | None = None,
    baggage: str | None = None,
    action: dict[str, Any] | None = None,
) -> str:
    """An ``invokefunction`` frame; without ``invocation_id`` nobody waits for a result.

    ``data`` may be :class:`~iii.protocol.codec.Encoded`: its text is spliced in where ``data`` goes, the frame the
    same text as had the value been encoded here.

    Raises :class:`TypeError`/:class:`ValueError` (from :func:`iii.wire.dumps`) when ``data`` has no JSON form.

    Example:
        >>> invoke_function("f", None, action={"type": "void"}, traceparent="00-ab-cd-01")
        '{"type":"invokefunction","function_id":"f","data":null,"traceparent":"00-ab-cd-01","action":{"type":"void"}}'
        >>> once = Encoded({"a": 1})
        >>> invoke_function("f", once, traceparent="00-ab") == invoke_function("f", {"a": 1}, traceparent="00-ab")
        True
    """
    encoded = data if isinstance(data, Encoded) else None
    frame: dict[str, Any] = {"type": "invokefunction"}
    if invocation_id is not None:
        frame["invocation_id"] = invocation_id
    frame["function_id"] = function_id
    frame["data"] = None if encoded is not None else data
    if traceparent is not None:
        frame["traceparent"] = traceparent
    if baggage is not None:
        frame["baggage"] = baggage
    if action is not None:
        frame["action"] = action
    text = dumps(frame)
    if encoded is not None:
        # the first such text is the key: a quote inside an earlier string value (an id) is escaped
        return text.replace(',"data":null', ',"data":' + encoded.text, 1)
    return text


def invocation_result(
    invocation_id: str,
    function_id: str,
    *,
    result: Any = None,
    error: Any = None,
    traceparent: str | None = None,
    baggage: str | None = None,
    result_json: str | None = None,
) -> str:
    """An ``invocationresult`` frame: ``error`` wins over ``result``; a null ``result`` is left out.

    ``result_json``: the result already encoded (by :func:`dumps`, so within the JSON policy), spliced in as the
    frame's last key instead of encoding ``result``: a large reply that does not change is encoded once.

    Raises :class:`TypeError`/:class:`ValueError` when ``result`` has no JSON form.

    Example:
        >>> invocation_result("i1", "f", result=1, error={"code": "x", "message": "m"})
        '{"type":"invocationresult","invocation_id":"i1","function_id":"f","error":{"code":"x","message":"m"}}'
        >>> invocation_result("i1", "f", result_json='{"n":[1]}')
        '{"type":"invocationresult","invocation_id":"i1","function_id":"f","result":{"n":[1]}}'
    """
    frame: dict[str, Any] = {"type": "invocationresult", "invocation_id": invocation_id, "function_id": function_id}
    if error is not None:
        frame["error"] = error
    elif result is not None:
        frame["result"] = result
    if traceparent is not None:
        frame["traceparent"] = traceparent
    if baggage is not None:
        frame["baggage"] = baggage
    text = dumps(frame)
    if result_json is not None and error is None:
        return f'{text[:-1]},"result":{result_json}}}'
    return text


def worker_registered(worker_id: str) -> str:
    """The engine's ``workerregistered`` greeting.

    Example:
        >>> worker_registered("w1")
        '{"type":"workerregistered","worker_id":"w1"}'
    """
    return dumps({"type": "workerregistered", "worker_id": worker_id})


def register_trigger(
    trigger_id: str, trigger_type: str, function_id: str, config: Any, *, metadata: Any = None
) -> str:
    """A ``registertrigger`` frame (worker → engine, or engine → the trigger type's owner); ``config`` is always
    present (``{}`` when ``None``, docs/protocol.md#sdk-improvements S1).

    Example:
        >>> register_trigger("t1", "cron", "tick", None)
        '{"type":"registertrigger","id":"t1","trigger_type":"cron","function_id":"tick","config":{}}'
    """
    frame: dict[str, Any] = {
        "type": "registertrigger",
        "id": trigger_id,
        "trigger_type": trigger_type,
        "function_id": function_id,
        "config": {} if config is None else config,
    }
    if metadata is not None:
        frame["metadata"] = metadata
    return dumps(frame)


def unregister_trigger(trigger_id: str, trigger_type: str | None = None) -> str:
    """An ``unregistertrigger`` frame.

    Example:
        >>> unregister_trigger("t1", "cron")
        '{"type":"unregistertrigger","id":"t1","trigger_type":"cron"}'
    """
    frame: dict[str, Any] = {"type": "unregistertrigger", "id": trigger_id}
    if trigger_type is not None:
        frame["trigger_type"] = trigger_type
    return dumps(frame)


def trigger_registration_result(
    trigger_id: str, trigger_type: Any, function_id: str, *, error: Any = None
) -> str:
    """A trigger type owner's answer to ``registertrigger``; ``error`` left out on success.

    Example:
        >>> trigger_registration_result("t1", "hook", "f", error={"code": "c", "message": "m"})
        '{"type":"triggerregistrationresult","id":"t1","trigger_type":"hook","function_id":"f","error":{"code":"c","message":"m"}}'
    """
    frame: dict[str, Any] = {
        "type": "triggerregistrationresult",
        "id": trigger_id,
        "trigger_type": trigger_type,
        "function_id": function_id,
    }
    if error is not None:
        frame["error"] = error
    return dumps(frame)



def register_function(message: BaseModel) -> str:
    """A ``registerfunction`` frame from a :class:`~iii.iii_types.RegisterFunctionMessage`.

    Example:
        >>> from iii.iii_types import RegisterFunctionMessage
        >>> register_function(RegisterFunctionMessage(id="f", description="adds"))
        '{"id":"f","description":"adds","type":"registerfunction"}'
    """
    return encode(message)


def unregister_function(function_id: str) -> str:
    """An ``unregisterfunction`` frame.

    Example:
        >>> unregister_function("f")
        '{"type":"unregisterfunction","id":"f"}'
    """
    return dumps({"type": "unregisterfunction", "id": function_id})


def register_service(message: BaseModel) -> str:
    """A ``registerservice`` frame from a :class:`~iii.iii_types.RegisterServiceMessage`.

    Example:
        >>> from iii.iii_types import RegisterServiceMessage
        >>> register_service(RegisterServiceMessage(id="svc", name="svc"))
        '{"id":"svc","name":"svc","type":"registerservice"}'
    """
    return encode(message)


def register_trigger_type(type_id: str, description: str) -> str:
    """A ``registertriggertype`` frame.

    Example:
        >>> register_trigger_type("hook", "web hooks")
        '{"type":"registertriggertype","id":"hook","description":"web hooks"}'
    """
    return dumps({"type": "registertriggertype", "id": type_id, "description": description})


def unregister_trigger_type(type_id: str) -> str:
    """An ``unregistertriggertype`` frame.

    Example:
        >>> unregister_trigger_type("hook")
        '{"type":"unregistertriggertype","id":"hook"}'
    """
    return dumps({"type": "unregistertriggertype", "id": type_id})
