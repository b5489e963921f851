"""Every duration a settings model takes is bounded (MAX_TIMEOUT_MS, MAX_TIMEOUT_S in seconds) and finite.

Before: 15 millisecond fields had no upper bound; 10**400 passed the configuration check and raised OverflowError
where it became seconds: ``functions_available_debounce_ms`` and ``channels.attach_timeout_ms`` a traceback out
of ``iii-engine`` (exit 1, 30-40 lines), the REST API's ``header_timeout`` / ``send_timeout`` exit 1 "integer
division result too large for a float", its ``default_timeout`` a 500 on every request, the queue's
``backoff_ms`` a job delayed for good, ``stop_timeout_ms`` a module stop never run. ``channels.attach_timeout_s:
.inf`` raised OverflowError out of the configuration's parse.

The scan covers every settings model of the engine and its modules, so a duration field added later cannot
forget its bound.
"""

from __future__ import annotations

import importlib
import logging
import math
import pkgutil
import re
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import annotated_types
import pytest
from pydantic import ValidationError

import iii_engine
from iii_engine.cli import main
from iii_engine.config import parse_config
from iii_engine.modules.http.settings import ApiSettings
from iii_engine.modules.queue.settings import QueueModuleSettings
from iii_engine.modules.stream.settings import KvStoreSettings
from iii_engine.settings import MAX_TIMEOUT_MS, MAX_TIMEOUT_S, ConfigError, Settings, duration_bound

HUGE = 10**400

# Names that say a number is a duration, wider than the rule's own pattern: a field they match and the rule does
# not must state a bound of its own.
_LOOKS_LIKE_DURATION = re.compile(
    r"_(ms|s|sec|secs|seconds|millis)$|timeout|interval|debounce|backoff|delay|ttl|grace|lease|retention|expir"
    r"|period|linger|wait(?!ing_per)")
_SECONDS = re.compile(r"_(s|sec|secs|seconds)$")


def _settings_models() -> list[type[Settings]]:
    for info in pkgutil.walk_packages(iii_engine.__path__, "iii_engine."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    found: list[type[Settings]] = []
    todo = [Settings]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found and sub.__module__.startswith("iii_engine."):
                found.append(sub)
            todo.append(sub)
    return found


def _arms(annotation: Any) -> Iterator[Any]:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        for arm in get_args(annotation):
            yield from _arms(arm)
    else:
        yield annotation


def _duration_fields() -> list[tuple[type[Settings], str, str, bool]]:
    """(model, attribute, key in the file, is a float) of every numeric field named as a duration."""
    fields = []
    for model in _settings_models():
        for name, field in model.model_fields.items():
            arms = set(_arms(field.annotation))
            numeric = arms & {int, float}
            if numeric and any(_LOOKS_LIKE_DURATION.search(n) for n in (name, field.alias or "")):
                fields.append((model, name, field.alias or name, float in numeric))
    return fields


def _unit_bound(name: str, key: str) -> int:
    return MAX_TIMEOUT_S if _SECONDS.search(name) or _SECONDS.search(key) else MAX_TIMEOUT_MS


def _own_bound(model: type[Settings], name: str) -> float | None:
    for item in model.model_fields[name].metadata:
        if isinstance(item, annotated_types.Le):
            return float(item.le)  # type: ignore[arg-type]
        if isinstance(item, annotated_types.Lt):
            return float(item.lt)  # type: ignore[arg-type]
    return None


_FILLERS: dict[Any, Any] = {str: "x", int: 1, float: 1.0, bool: False}


def _required(model: type[Settings], but: str) -> dict[str, Any]:
    """A value for each required scalar field of ``model`` but ``but``: some models check their document as a whole
    and report only its first problem (a required key missing before the duration)."""
    document = {}
    for name, field in model.model_fields.items():
        key = field.alias or name
        filler = next((_FILLERS[arm] for arm in _arms(field.annotation) if arm in _FILLERS), None)
        if field.is_required() and key != but and filler is not None:
            document[key] = filler
    return document


def _refusal(model: type[Settings], key: str, value: Any) -> str | None:
    """Why ``{key: value}`` is refused at ``key``; ``None`` when it is accepted or refused for another reason."""
    try:
        model.model_validate({**_required(model, key), key: value})
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            inner = (error.get("ctx") or {}).get("error")
            path = inner.path if isinstance(inner, ConfigError) else ""  # a model that checks its own fields
            if error["loc"][:1] == (key,) or path == key:
                return str(inner or error["msg"])
        return None
    except ConfigError as exc:
        return str(exc) if exc.path == key else None
    return None


def test_the_scan_sees_the_fields_once_unbounded() -> None:
    # the scan must reach the models of modules, the engine's and the nested ones, or it proves nothing
    seen = {(model.__name__, key) for model, _, key, _ in _duration_fields()}
    assert {("EngineConfig", "functions_available_debounce_ms"), ("ChannelSettings", "attach_timeout_ms"),
            ("ApiSettings", "header_timeout"), ("QueueSettings", "lease_ms"),
            ("QueueModuleSettings", "stop_timeout_ms"), ("KvStoreSettings", "save_interval_ms")} <= seen
    assert len(seen) >= 30


def test_every_duration_field_of_every_settings_model_is_bounded() -> None:
    unbounded = []
    for model, name, key, is_float in _duration_fields():
        most = _unit_bound(name, key)
        own = _own_bound(model, name)
        rule = duration_bound(name, model.model_fields[name].alias)
        if (own is None or own > most) and rule is None:
            unbounded.append(f"{model.__name__}.{key}: no upper bound")
            continue
        for value in (HUGE, most + 1) + ((math.inf, math.nan) if is_float else ()):
            if _refusal(model, key, value) is None:
                unbounded.append(f"{model.__name__}.{key}: {value!r:.20} accepted")
    assert not unbounded, unbounded


# the fields the attack found, as a file gives them: refused by their path, in one line; the bound itself taken
ENGINE_KEYS = [("functions_available_debounce_ms", "functions_available_debounce_ms: {}"),
               ("channels.attach_timeout_ms", "channels: {{attach_timeout_ms: {}}}")]
API_KEYS = ["default_timeout", "body_timeout", "header_timeout", "slot_timeout", "send_timeout"]
QUEUE_KEYS = ["backoff_ms", "poll_interval_ms", "lease_ms", "missing_function_grace_ms", "store_retry_max_ms",
              "idle_poll_max_ms"]
QUEUE_MODULE_KEYS = ["stop_timeout_ms", "max_topic_backoff_ms"]


@pytest.mark.parametrize(("path", "document"), ENGINE_KEYS)
def test_an_engine_duration_past_its_bound_is_refused_by_path(path: str, document: str) -> None:
    for value in (HUGE, MAX_TIMEOUT_MS + 1):
        with pytest.raises(ConfigError) as caught:
            parse_config("port: 0\nmodules: []\n" + document.format(value), env={})
        assert str(caught.value).startswith(f"{path}: must be <= {MAX_TIMEOUT_MS}, got ")
        assert "\n" not in str(caught.value)
    parse_config("port: 0\nmodules: []\n" + document.format(MAX_TIMEOUT_MS), env={})


@pytest.mark.parametrize("key", API_KEYS)
def test_a_rest_api_timeout_past_its_bound_is_refused_by_key(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^modules\[0\]\.config\.{key}: must be <= {MAX_TIMEOUT_MS}, got "):
        ApiSettings.parse({key: HUGE}, at="modules[0].config")
    assert ApiSettings.parse({key: MAX_TIMEOUT_MS}).model_dump(by_alias=True)[key] == MAX_TIMEOUT_MS


@pytest.mark.parametrize("key", QUEUE_KEYS)
def test_a_queue_duration_past_its_bound_is_refused_by_path(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^queue_configs\.q\.{key}: must be <= {MAX_TIMEOUT_MS}, got "):
        QueueModuleSettings.parse({"queue_configs": {"q": {key: HUGE}}})
    settings = QueueModuleSettings.parse({"queue_configs": {"q": {key: MAX_TIMEOUT_MS}}})
    assert getattr(settings.queue_configs["q"], key) == MAX_TIMEOUT_MS


@pytest.mark.parametrize("key", QUEUE_MODULE_KEYS)
def test_a_queue_module_duration_past_its_bound_is_refused_by_key(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: must be <= {MAX_TIMEOUT_MS}, got "):
        QueueModuleSettings.parse({key: HUGE})


def test_a_kv_store_save_interval_past_its_bound_is_refused() -> None:
    with pytest.raises(ConfigError, match=rf"^save_interval_ms: must be <= {MAX_TIMEOUT_MS}, got "):
        KvStoreSettings.parse({"save_interval_ms": HUGE})
    assert KvStoreSettings.parse({"save_interval_ms": None}).save_interval_ms is None


@pytest.mark.parametrize(("value", "problem"), [
    (".inf", f"must be <= {MAX_TIMEOUT_S}, got inf"), (str(HUGE), f"must be <= {MAX_TIMEOUT_S}, got 1000"),
    (str(MAX_TIMEOUT_S + 1), f"must be <= {MAX_TIMEOUT_S}, got {MAX_TIMEOUT_S + 1}"),
    ("-.inf", "must be a number > 0, got -inf"), (".nan", "must be a number > 0, got nan")],
    ids=["inf", "10**400", "bound+1", "-inf", "nan"])
def test_attach_timeout_s_must_be_finite_and_bounded(value: str, problem: str) -> None:
    # before: .inf raised OverflowError (cannot convert float infinity to integer) out of parse_config
    with pytest.raises(ConfigError) as caught:
        parse_config(f"port: 0\nmodules: []\nchannels: {{attach_timeout_s: {value}}}\n", env={})
    assert str(caught.value).startswith(f"channels.attach_timeout_s: {problem}"), str(caught.value)
    assert parse_config(f"port: 0\nmodules: []\nchannels: {{attach_timeout_s: {MAX_TIMEOUT_S}}}\n",
                        env={}).channels.attach_timeout_ms == MAX_TIMEOUT_MS


@pytest.fixture
def _root_level() -> Iterator[None]:
    # main sets the root logger's level for the process it owns; give the other tests theirs back
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


@pytest.mark.usefixtures("_root_level")
@pytest.mark.parametrize(("document", "expected"), [
    (f"modules: []\nfunctions_available_debounce_ms: {HUGE}\n", "iii-engine: functions_available_debounce_ms: "),
    (f"modules: []\nchannels: {{attach_timeout_ms: {HUGE}}}\n", "iii-engine: channels.attach_timeout_ms: "),
    ("modules: []\nchannels:\n  attach_timeout_s: .inf\n", "iii-engine: channels.attach_timeout_s: "),
    (f"modules:\n  - class: modules::api::RestApiModule\n    config: {{port: 0, header_timeout: {HUGE}}}\n",
     "iii-engine: module modules::api::RestApiModule: modules[0].config.header_timeout: "),
    (f"modules:\n  - class: modules::api::RestApiModule\n    config: {{port: 0, send_timeout: {HUGE}}}\n",
     "iii-engine: module modules::api::RestApiModule: modules[0].config.send_timeout: "),
], ids=["debounce", "attach_ms", "attach_s_inf", "api_header", "api_send"])
def test_the_cli_says_one_line_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], document: str,
                                           expected: str) -> None:
    # before: exit 1 with a 30-44 line traceback (debounce, attach_ms, attach_s_inf), or exit 1 "cannot start:
    # integer division result too large for a float" (api_header, api_send)
    config = tmp_path / "engine.yaml"
    config.write_text(document)
    assert main(["--port", "0", "--config", str(config), "--log-level", "ERROR"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(expected), lines[0]
    assert "must be" in lines[0] and "Traceback" not in captured.err
