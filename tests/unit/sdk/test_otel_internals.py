"""iii.otel_internals is the one module that reads OpenTelemetry's private internals: its checks hold on the
installed SDK, each check's fallback still exports the same telemetry, and no other module of iii reads them."""

from __future__ import annotations

import ast
import collections
import json
import logging
from pathlib import Path
from typing import Any

import opentelemetry
import pytest
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from iii import light_span, otel_internals
from iii.light_span import HandlerSpans, LightSpan, OwnTracerProvider
from iii.telemetry_exporters import EngineSpanExporter, SharedEngineConnection
from iii.warn_once import WarnOnce

PACKAGE = Path(light_span.__file__).parent
# The logs SDK and API live under `_logs` in every release we support: documented (experimental), the only way.
DOCUMENTED_PRIVATE_MODULES = {"opentelemetry._logs", "opentelemetry.sdk._logs", "opentelemetry.sdk._logs.export"}
ALWAYS_THEIRS = {"_batch_processor", "_exporter", "_queue", "_shutdown", "_pid", "_resource", "_RUNTIME_CONTEXT",
                 "_current_context", "_lock"}
REMOTE = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"


def _underscore(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _otel_private_names() -> set[str]:
    """Every underscore name OpenTelemetry's own sources define or read (attributes, functions, module names)."""
    names: set[str] = set()
    for root in {Path(path) for path in opentelemetry.__path__}:
        for source in root.rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute) and _underscore(node.attr):
                    names.add(node.attr)
                elif isinstance(node, ast.FunctionDef | ast.ClassDef) and _underscore(node.name):
                    names.add(node.name)
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and _underscore(node.id):
                    names.add(node.id)
    return names


def _iii_own_names(trees: dict[Path, ast.Module]) -> set[str]:
    """Underscore names iii defines itself: self./cls. attributes, functions, classes, globals, __slots__."""
    names: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) \
                    and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                names.add(node.attr)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Attribute):
                names.add(node.target.attr)
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__slots__"
                                                      for t in node.targets):
                names.update(c.value for c in ast.walk(node.value)
                             if isinstance(c, ast.Constant) and isinstance(c.value, str))
    return {name for name in names if _underscore(name)}


def private_otel_accesses(package: Path) -> list[str]:
    """``file:line what`` of every read of an OpenTelemetry private name in ``package`` outside otel_internals.py:
    imports of an underscore module or name of opentelemetry, ``x._name``/``getattr(x, "_name")`` where ``_name``
    is one of OpenTelemetry's and not one iii defines itself."""
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(package.glob("*.py"))}
    # OpenTelemetry's names iii happens to use for fields of its own too: read on anything but self/cls, they are
    # OpenTelemetry's (a batch processor's, a provider's, the context module's).
    theirs = (_otel_private_names() - _iii_own_names(trees)) | ALWAYS_THEIRS
    found: list[str] = []
    for path, tree in trees.items():
        if path.name == "otel_internals.py" or not any(  # a module without OpenTelemetry reads other libraries'
                isinstance(node, ast.Import | ast.ImportFrom) and "opentelemetry" in ast.unparse(node)
                for node in ast.walk(tree)):
            continue
        for node in ast.walk(tree):
            where = f"{path.name}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and node.module.split(".")[0] == "opentelemetry":
                if node.module not in DOCUMENTED_PRIVATE_MODULES and any(
                        _underscore(part) for part in node.module.split(".")):
                    found.append(f"{where} from {node.module} import")
                found += [f"{where} import {alias.name} from {node.module}" for alias in node.names if
                          _underscore(alias.name) and f"{node.module}.{alias.name}" not in DOCUMENTED_PRIVATE_MODULES]
            elif isinstance(node, ast.Attribute) and node.attr in theirs and not (
                    isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{where} .{node.attr}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) >= 2 \
                    and isinstance(node.args[1], ast.Constant) and node.args[1].value in theirs:
                found.append(f"{where} {node.func.id}(..., {node.args[1].value!r})")
    return found


def test_no_module_but_otel_internals_reads_opentelemetry_private_names() -> None:
    assert private_otel_accesses(PACKAGE) == []


def test_the_checks_hold_on_the_installed_opentelemetry(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "iii.otel_internals")
    assert otel_internals._EMIT_KNOWN and otel_internals._IMMUTABLE_KNOWN
    exporter = InMemorySpanExporter()
    processor = BatchSpanProcessor(exporter)
    logs = LoggerProvider()
    log_processor = BatchLogRecordProcessor(InMemorySpanExporter())  # type: ignore[arg-type]  # never exports here
    logs.add_log_record_processor(log_processor)
    provider = OwnTracerProvider()
    provider.add_span_processor(own := BatchSpanProcessor(InMemorySpanExporter()))
    try:
        batch = otel_internals.batch_of(processor)
        assert batch is not None and otel_internals.batch_exporter(batch) is exporter
        assert otel_internals.log_processors(logs) == (log_processor,)
        from opentelemetry import context

        runtime, variable = otel_internals.context_variable(context)
        assert variable is not None and runtime is otel_internals.runtime_context()
        otel_internals.retarget_providers(provider, logs, None, Resource({"service.name": "other"}))
        assert provider.resource.attributes["service.name"] == "other"
        provider.add_span_processor(user := BatchSpanProcessor(InMemorySpanExporter()))
        assert otel_internals.drop_added_processors(provider, own, logs, (log_processor,)) == [user]
        user.shutdown()  # type: ignore[no-untyped-call]
    finally:
        provider.shutdown()
        processor.shutdown()  # type: ignore[no-untyped-call]
        logs.shutdown()
    assert not caplog.records


def _frames_of_light_spans(count: int) -> list[dict[str, Any]]:
    frames: list[bytes] = []
    provider = OwnTracerProvider()
    provider.add_span_processor(BatchSpanProcessor(EngineSpanExporter(SharedEngineConnection(frames.append))))  # type: ignore[arg-type]
    spans = HandlerSpans(provider, "fallback")
    try:
        for n in range(count):
            span = spans.begin(f"call f{n}", REMOTE)
            assert isinstance(span, LightSpan)
            span.set_attribute("n", n)
            span.end()
        assert provider.force_flush()
    finally:
        provider.shutdown()
    out: list[dict[str, Any]] = []
    for frame in frames:
        body = json.loads(frame[frame.index(b"{"):])
        out += [span for scope in body["resourceSpans"][0]["scopeSpans"] for span in scope["spans"]]
    return out


def test_a_renamed_batch_field_takes_the_processors_own_hooks(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    expected = _frames_of_light_spans(5)
    monkeypatch.setattr(otel_internals, "_warn_once", WarnOnce(otel_internals.log))
    monkeypatch.setattr(otel_internals, "_BATCH_FIELDS",
                        (*otel_internals._BATCH_FIELDS, ("_renamed_queue", collections.deque)))
    caplog.set_level(logging.WARNING, "iii.otel_internals")
    got = _frames_of_light_spans(5)
    assert [(s["name"], s["attributes"], s["parentSpanId"]) for s in got] \
        == [(s["name"], s["attributes"], s["parentSpanId"]) for s in expected]
    assert len(got) == 5
    assert [r.getMessage() for r in caplog.records if "BatchProcessor._renamed_queue" in r.getMessage()]


def test_without_the_attributes_flag_an_ended_span_still_freezes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otel_internals, "_IMMUTABLE_KNOWN", False)
    provider = OwnTracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    span = HandlerSpans(provider, "fallback").start("call f", None)
    span.set_attribute("k", "v")
    span.end()
    assert provider.force_flush()
    provider.shutdown()
    (ended,) = exporter.get_finished_spans()
    assert dict(ended.attributes or {}) == {"k": "v"}
    with pytest.raises(TypeError):
        ended.attributes["x"] = 1  # type: ignore[index]
    frozen = otel_internals._frozen_copy(BoundedAttributes(2, {"a": 1, "b": 2, "c": 3}, immutable=False))
    assert (dict(frozen), frozen.dropped, frozen.maxlen) == ({"b": 2, "c": 3}, 1, 2)


def test_a_provider_of_another_layout_is_left_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otel_internals, "_warn_once", WarnOnce(otel_internals.log))
    monkeypatch.setattr(otel_internals, "_METER_PROVIDER_FIELDS", ("_renamed_meters",))
    from opentelemetry.sdk.metrics import MeterProvider

    provider = OwnTracerProvider(resource=Resource({"service.name": "before"}))
    meters = MeterProvider()
    try:
        with pytest.raises(AttributeError):
            otel_internals.retarget_providers(provider, None, meters, Resource({"service.name": "after"}))
    finally:
        meters.shutdown()
    assert provider.resource.attributes["service.name"] == "before"  # checked before anything changed
