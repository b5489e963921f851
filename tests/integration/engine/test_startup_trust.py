"""Issue #8 "fail fast, say why": an engine that cannot start says why in one line, exits non-zero and leaves
no module running and no port held; in-process, ``Engine.start()`` raises and releases everything."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import iii_engine.engine as engine_module
from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.config import ConfigError, parse_config
from iii_engine.modules.base import EngineModule, EngineStartError, ModuleStartError
from iii_engine.modules.catalogue import resolve
from tests.ports import reserved_ports
from tests.services import require_postgres

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: start-up failures of our engine")]

ROOT = Path(__file__).resolve().parents[3]
# the CLI shows at once that a module's start still waits (iii_engine.closing.START_NOTICE)
START_NOTICE_LINE = re.compile(r" INFO iii_engine\.engine: waiting for module \S+'s start")
STREAM = "modules::stream::StreamModule"
API = "modules::api::RestApiModule"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def occupied() -> Iterator[int]:
    """A loopback port something else listens on (no SO_REUSEADDR bind gets it)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def bindable(port: int, *, reuse: bool = True) -> bool:
    """Whether a listener could take ``port`` right now (with SO_REUSEADDR, as asyncio binds, by default)."""
    with socket.socket() as probe:
        if reuse:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            probe.listen()
        except OSError:
            return False
        return True


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def engine_cli(*args: str, pythonpath: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m iii_engine ARGS``; returns once it exits (a started engine would time the test out)."""
    path = os.pathsep.join(filter(None, [pythonpath, str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "iii_engine", *args], capture_output=True, text=True,
                          timeout=25, cwd=ROOT, env={**os.environ, "PYTHONPATH": path})


def one_error_line(proc: subprocess.CompletedProcess[str], status: int) -> str:
    """The single stderr line of a failed run (and nothing said about listening). A start slower than
    ``MODULE_START_NOTICE_S`` (a busy machine) first says once what it waits for: that notice is left out."""
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if not START_NOTICE_LINE.search(line)]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("iii-engine: "), lines
    assert "Traceback" not in proc.stderr and "listening" not in proc.stdout, (proc.stdout, proc.stderr)
    return lines[0]


def listener_config(tmp_path: Path, *, api_port: int, stream_port: int, stream_store: str = "memory://",
                    port: int = 0) -> Path:
    config = tmp_path / "engine.yaml"
    config.write_text(
        f"port: {port}\n"
        "modules:\n"
        f"  - class: {API}\n"
        f"    config: {{host: 127.0.0.1, port: {api_port}}}\n"
        f"  - class: {STREAM}\n"
        f"    config: {{host: 127.0.0.1, port: {stream_port}, store_url: '{stream_store}'}}\n"
    )
    return config


# -- the command line ------------------------------------------------------------------------------------------


def test_bad_stream_store_scheme_is_a_usage_error_naming_the_flag() -> None:
    # before: exit 1 at the stream module's start, named as "modules[0].config.store_url", a path the user never wrote
    line = one_error_line(engine_cli("--port", "0", "--stream-store", "bad://u:secret@x"), 2)
    assert line.startswith("iii-engine: argument --stream-store: unsupported stream URL scheme 'bad'"), line
    assert "secret" not in line and "modules[" not in line


def test_bad_store_url_in_the_config_stops_the_engine_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "engine.yaml"
    config.write_text(f"modules:\n  - class: {STREAM}\n"
                      f"    config: {{host: 127.0.0.1, port: {free_port()}, store_url: 'bad://x'}}\n")
    # a setting the module refuses is a usage error, as a bad file is (it was exit 1 with an --allow-degraded hint)
    line = one_error_line(engine_cli("--port", "0", "--config", str(config)), 2)
    assert line.startswith(f"iii-engine: module {STREAM}: modules[0].config.store_url: ")
    assert "unsupported stream URL scheme 'bad'" in line and "--allow-degraded" not in line


def test_redis_down_stops_the_engine_and_never_prints_the_password() -> None:
    closed = free_port()
    line = one_error_line(engine_cli("--port", "0", "--stream-store", f"redis://:s3cret@127.0.0.1:{closed}/0"), 1)
    assert f"module {STREAM} cannot start" in line and str(closed) in line
    assert "s3cret" not in line


@pytest.mark.postgres
def test_missing_postgres_database_stops_the_engine() -> None:
    server = require_postgres()
    from tests.integration.streams.pg_database import database_url

    name = f"iii_missing_{uuid.uuid4().hex[:8]}"
    url = database_url(server, name).replace("postgres@", "postgres:s3cret@", 1)
    assert ":s3cret@" in url
    line = one_error_line(engine_cli("--port", "0", "--stream-store", url), 1)
    assert f"module {STREAM} cannot start" in line and f'database "{name}" does not exist' in line
    assert "s3cret" not in line


def test_missing_extra_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['redis'] = None  # as if not installed\n")
    line = one_error_line(engine_cli("--port", "0", "--stream-store", "redis://127.0.0.1:1/0",
                                     pythonpath=str(blocker)), 1)
    assert "missing package 'redis' (pip install 'iii-toolkit[redis]')" in line


def test_unknown_module_class_fails_with_a_suggestion(tmp_path: Path) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text("modules:\n  - class: modules::stream::StreamModul\n")
    line = one_error_line(engine_cli("--port", "0", "--config", str(config)), 2)
    assert "unknown module class 'modules::stream::StreamModul' (did you mean 'modules::stream::StreamModule'?)" \
        in line


def test_taken_worker_port_fails_before_any_module_port_is_bound(tmp_path: Path) -> None:
    # the module ports are held for the test: no other test process may listen there and fail bindable()
    with reserved_ports(2) as (api_port, stream_port), occupied() as port:
        config = listener_config(tmp_path, api_port=api_port, stream_port=stream_port, port=port)
        line = one_error_line(engine_cli("--config", str(config)), 1)
        assert line == f"iii-engine: cannot listen on 127.0.0.1:{port}: Address already in use"
        assert bindable(api_port) and bindable(stream_port)


@pytest.mark.parametrize(("args", "expected"), [
    (["--log-level", "FOO"], "argument --log-level: invalid choice: 'FOO'"),
    (["--port", "99999"], "argument --port: must be an integer between 0 and 65535, got '99999'"),
    (["--port", "-1"], "argument --port: must be an integer between 0 and 65535, got '-1'"),
    # int() takes these; no other number the commands read does (they listened on 47205, 10000 and 47206)
    (["--port", "٤٧٢٠٥"], "argument --port: must be an integer between 0 and 65535, got '٤٧٢٠٥'"),
    (["--port", "1_0_0_0_0"], "argument --port: must be an integer between 0 and 65535, got '1_0_0_0_0'"),
    (["--port", " 47206 "], "argument --port: must be an integer between 0 and 65535, got ' 47206 '"),
    # (before: the default configuration was started, as if no --config had been given)
    (["--config", ""], "argument --config: the file name is empty"),
    (["logs", "--limit", "1_0"], "argument --limit: must be a positive integer, got '1_0'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_usage_errors_are_one_line_with_status_2(args: list[str], expected: str) -> None:
    assert expected in one_error_line(engine_cli(*args), 2)


def test_bad_port_in_the_configuration_file_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "port.yaml"
    config.write_text("port: 70000\n")
    assert one_error_line(engine_cli("--config", str(config)), 2) == \
        "iii-engine: port: must be <= 65535, got 70000"


@pytest.mark.parametrize(("host", "reason"), [
    ("203.0.113.1", "Cannot assign requested address"),  # TEST-NET-3: not an address of this machine
    ("nosuchhost.invalid", "Name or service not known"),
])
def test_unusable_host_is_one_line_with_status_1(host: str, reason: str) -> None:
    line = one_error_line(engine_cli("--host", host, "--port", "0"), 1)
    assert line.startswith(f"iii-engine: cannot listen on {host}:0: ")
    assert reason.lower() in line.lower()


async def test_allow_degraded_flag_starts_without_the_broken_module(
        engine_process: Any, tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text(f"modules:\n  - class: {STREAM}\n"
                      f"    config: {{host: 127.0.0.1, port: {free_port()}, store_url: 'bad://x'}}\n")
    proc = await engine_process("--config", str(config), "--allow-degraded")
    assert refused(proc.port) is False
    log = proc.log()
    assert log.count(f"module {STREAM} not available: modules[0].config.store_url: unsupported stream URL scheme "
                     "'bad'") == 1
    assert "Traceback" not in log


# -- in-process ------------------------------------------------------------------------------------------------


async def test_engine_start_raises_and_releases_every_port_when_a_later_module_fails() -> None:
    # the ports are held for the whole test (the engine listens on them all the same): another test process
    # must not take one between the failed start and the healthy one
    with reserved_ports(3) as (api_port, stream_port, port):
        config = EngineConfig(host="127.0.0.1", port=port, modules=[
            ModuleSpec(API, {"host": "127.0.0.1", "port": api_port}),  # starts first and binds its port
            ModuleSpec(STREAM, {"host": "127.0.0.1", "port": stream_port, "store_url": "bad://x"}),
        ])
        engine = Engine(config=config)
        with pytest.raises(ModuleStartError) as failure:
            await engine.start()
        assert failure.value.module == STREAM and "unsupported stream URL scheme" in failure.value.reason
        assert engine.modules == {}  # the REST API and the worker module were stopped again
        assert refused(port) and refused(api_port) and refused(stream_port)
        assert bindable(port) and bindable(api_port) and bindable(stream_port)
        # and the same ports serve a healthy engine straight away
        good = EngineConfig(host="127.0.0.1", port=port, modules=[ModuleSpec(API, {"host": "127.0.0.1",
                                                                                    "port": api_port})])
        async with Engine(config=good) as healthy:
            assert healthy.port == port and not refused(api_port)


async def test_taken_worker_port_raises_before_modules_bind_theirs() -> None:
    with reserved_ports(2) as (api_port, stream_port), occupied() as port:  # module ports held, as above
        engine = Engine(config=EngineConfig(host="127.0.0.1", port=port, modules=[
            ModuleSpec(API, {"host": "127.0.0.1", "port": api_port}),
            ModuleSpec(STREAM, {"host": "127.0.0.1", "port": stream_port}),
        ]))
        with pytest.raises(EngineStartError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            await engine.start()
        assert not isinstance(EngineStartError("x"), ModuleStartError)
        assert engine.modules == {} and bindable(api_port) and bindable(stream_port)


async def test_allow_degraded_keeps_the_old_warning(caplog: pytest.LogCaptureFixture) -> None:
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(STREAM, {"store_url": "bad://x"})])
    with caplog.at_level(logging.DEBUG, logger="iii_engine"):
        async with Engine(config=config, allow_degraded=True) as engine:
            assert engine.module("stream") is None
            assert engine.unavailable_modules[STREAM].startswith(
                "modules[0].config.store_url: unsupported stream URL scheme")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and STREAM in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is None


class _Gate(EngineModule):
    """A module whose start waits for the test, then fails or succeeds; records its stop."""

    name = "gate"
    class_names = ("modules::gate::GateModule",)
    entered: asyncio.Event
    release: asyncio.Event
    fail = False
    stopped = 0

    async def start(self) -> None:
        type(self).entered.set()
        await type(self).release.wait()
        if type(self).fail:
            raise ConnectionError("store went away")

    async def stop(self) -> None:
        type(self).stopped += 1


def _with_gate(name: str) -> type[EngineModule]:
    return _Gate if name == "modules::gate::GateModule" else resolve(name)


@pytest.mark.parametrize("fail", [False, True])
async def test_worker_port_refuses_connections_until_every_module_started(
        monkeypatch: pytest.MonkeyPatch, fail: bool) -> None:
    monkeypatch.setattr(engine_module, "resolve", _with_gate)
    _Gate.entered, _Gate.release, _Gate.fail, _Gate.stopped = asyncio.Event(), asyncio.Event(), fail, 0
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::gate::GateModule")]))
    starting = asyncio.create_task(engine.start())
    await asyncio.wait_for(_Gate.entered.wait(), 5)
    port = engine.port
    # Already bound (Linux lets another SO_REUSEADDR socket share a port nobody listens on yet; a plain bind
    # fails) ...
    assert not bindable(port, reuse=False)
    assert refused(port)  # ... but no worker gets in before the modules are ready
    _Gate.release.set()
    if fail:
        with pytest.raises(ModuleStartError, match="module modules::gate::GateModule cannot start: store went away"):
            await starting
        assert _Gate.stopped == 1  # a module that failed half-way is asked to let go of what it holds
        assert refused(port) and bindable(port)
    else:
        await starting
        try:
            assert not refused(port) and engine.ready.is_set()
        finally:
            await engine.stop()
        assert _Gate.stopped == 1


def test_allow_degraded_configuration_key() -> None:
    assert parse_config("allow_degraded: true\n").allow_degraded is True
    assert parse_config("").allow_degraded is False
    assert EngineConfig().with_overrides(allow_degraded=True).allow_degraded is True
    with pytest.raises(ConfigError, match="allow_degraded: must be true or false, got 'yes please'"):
        parse_config("allow_degraded: yes please\n")
    with pytest.raises(ConfigError, match="port: must be >= 0, got -5"):
        parse_config("port: -5\n")
