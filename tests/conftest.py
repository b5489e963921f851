"""Shared fixtures: the engine under test (``engine_url``, ``rest_url``, ``streams_url``), our in-process engine
(``engine``) and real ``iii-engine`` processes (``engine_process``), each on a free port.

Against any engine: with ``III_TEST_ENGINE_URL`` set (plus ``III_TEST_REST_URL`` / ``III_TEST_STREAMS_URL``, see
``tests/services.py``) the URL fixtures name that engine instead of starting ours, and in ``tests/integration``
and ``tests/interop`` these tests are skipped, with the reason in the skip message:
- tests marked ``@pytest.mark.our_engine("why")`` (our improvements, custom module configuration, process control);
- tests that ask for our engine itself (fixtures ``engine``, ``engine_process``).
Any other test there that starts an ``Engine`` of its own fails, naming the fix, so nothing silently tests ours.
With the variable unset nothing changes.

Example:
    async def test_something(engine_url: str) -> None:      # ours, or III_TEST_ENGINE_URL
        async with websockets.connect(engine_url) as ws: ...

    @pytest.mark.our_engine("reads the engine's registry")
    async def test_internals(engine: Engine) -> None: ...

    async def test_cli(engine_process) -> None:
        proc = await engine_process("--log-level", "DEBUG")
        async with websockets.connect(proc.url) as ws: ...
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.catalogue import DEFAULT_MODULES
from tests.services import EXTERNAL_ENGINE

ROOT = Path(__file__).resolve().parents[1]
READY_PREFIX = "iii engine listening on "
OUR_ENGINE = "our_engine"
# Test directories meant to run against any engine, and the fixtures that hand a test our engine itself.
_AGAINST_ANY_ENGINE = ("integration", "interop")
_OUR_ENGINE_FIXTURES = ("engine", "engine_process")

# Modules with their own listeners get port 0, so parallel test runs never collide on 3111/3112.
_OWN_PORT_MODULES = ("modules::stream::StreamModule", "modules::api::RestApiModule")


def engine_test_config(**overrides: object) -> EngineConfig:
    """The default module set, every listener on a free loopback port."""
    modules = [ModuleSpec(name, {"host": "127.0.0.1", "port": 0} if name in _OWN_PORT_MODULES else {})
               for name in DEFAULT_MODULES]
    return EngineConfig(host="127.0.0.1", port=0, modules=modules, **overrides)  # type: ignore[arg-type]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{OUR_ENGINE}(reason): needs our embedded engine (its improvements, internals, custom module "
                   "configuration or process control); skipped when III_TEST_ENGINE_URL names another engine")


def _against_any_engine(node: pytest.Item) -> bool:
    try:
        relative = node.path.resolve().relative_to(ROOT / "tests")
    except ValueError:
        return False
    return relative.parts[0] in _AGAINST_ANY_ENGINE


def _needs_our_engine(item: pytest.Item) -> str | None:
    """Why ``item`` cannot run against an external engine, or ``None``."""
    marker = item.get_closest_marker(OUR_ENGINE)
    if marker is not None:
        return str(marker.args[0] if marker.args else marker.kwargs.get("reason", "marked our_engine"))
    if _against_any_engine(item):
        used = [name for name in _OUR_ENGINE_FIXTURES if name in getattr(item, "fixturenames", ())]
        if used:
            return f"uses our engine itself (fixture {used[0]!r})"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if EXTERNAL_ENGINE is None:
        return
    for item in items:
        why = _needs_our_engine(item)
        if why is not None:
            item.add_marker(pytest.mark.skip(reason=f"needs our engine: {why}; III_TEST_ENGINE_URL is set"))


@pytest.fixture(autouse=True)
def _only_the_engine_under_test(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``III_TEST_ENGINE_URL`` set, a test meant for any engine that starts an ``Engine`` of its own fails:
    it would test ours while claiming to test the external one."""
    if EXTERNAL_ENGINE is None or not _against_any_engine(request.node) or _needs_our_engine(request.node):
        return

    async def refuse(self: Engine) -> None:
        pytest.fail(f"{request.node.nodeid} starts an engine of its own while III_TEST_ENGINE_URL is set: use the "
                    f"engine_url / rest_url / streams_url fixtures, or mark it @pytest.mark.{OUR_ENGINE}(reason)",
                    pytrace=False)

    monkeypatch.setattr(Engine, "start", refuse)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose kernel completes the TCP handshake (the listen backlog) but where nothing ever answers: a server
    gone silent (a frozen host, a listener that never speaks). A connection's first request waits for good."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    """An in-process engine on a free port, default modules."""
    async with Engine(config=engine_test_config()) as running:
        yield running


@pytest.fixture
def engine_url(request: pytest.FixtureRequest) -> str:
    """The worker URL of the engine under test: ``III_TEST_ENGINE_URL``, or ``ws://127.0.0.1:<port>`` of
    :func:`engine` (the same engine the test's ``engine`` fixture, if any, is)."""
    if EXTERNAL_ENGINE is not None:
        return EXTERNAL_ENGINE.url
    engine: Engine = request.getfixturevalue("engine")
    return engine.url


@pytest.fixture
def rest_url(request: pytest.FixtureRequest) -> str:
    """``http://host:port`` of the engine under test's REST API module (``III_TEST_REST_URL``; the test is
    skipped when only ``III_TEST_ENGINE_URL`` is set)."""
    if EXTERNAL_ENGINE is not None:
        if EXTERNAL_ENGINE.rest_url is None:
            pytest.skip(f"III_TEST_REST_URL is not set (the REST API of {EXTERNAL_ENGINE.url})")
        return EXTERNAL_ENGINE.rest_url
    engine: Engine = request.getfixturevalue("engine")
    module = engine.module("http_api")
    assert module is not None, f"the test engine has no REST API module: {engine.unavailable_modules}"
    return str(module.base_url).rstrip("/")  # type: ignore[attr-defined]


@pytest.fixture
def streams_url(request: pytest.FixtureRequest) -> str:
    """``ws://host:port`` of the engine under test's stream socket (``III_TEST_STREAMS_URL``; the test is
    skipped when only ``III_TEST_ENGINE_URL`` is set)."""
    if EXTERNAL_ENGINE is not None:
        if EXTERNAL_ENGINE.streams_url is None:
            pytest.skip(f"III_TEST_STREAMS_URL is not set (the stream socket of {EXTERNAL_ENGINE.url})")
        return EXTERNAL_ENGINE.streams_url
    engine: Engine = request.getfixturevalue("engine")
    module = engine.module("stream")
    assert module is not None, f"the test engine has no stream module: {engine.unavailable_modules}"
    return str(module.url).rstrip("/")  # type: ignore[attr-defined]


@dataclass
class EngineProcess:
    """A running ``python -m iii_engine`` subprocess."""

    process: asyncio.subprocess.Process
    url: str
    stderr_path: Path

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.url.rsplit(":", 1)[1])

    def log(self) -> str:
        """Everything it logged so far."""
        return self.stderr_path.read_text(errors="replace")


@pytest.fixture
async def engine_process(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[EngineProcess]]]:
    """Factory: ``await engine_process(*extra_args)`` starts an engine process on a free port and waits until
    it prints its ready line; every process is killed at teardown."""
    started: list[asyncio.subprocess.Process] = []

    async def start(*args: str, ready_within: float = 15.0) -> EngineProcess:
        stderr_path = tmp_path / f"engine-{len(started)}.log"
        pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": pythonpath}
        with stderr_path.open("wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "iii_engine", "--port", "0", *args,
                stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env, cwd=ROOT)
        started.append(proc)
        assert proc.stdout is not None
        try:
            while True:
                line = (await asyncio.wait_for(proc.stdout.readline(), ready_within)).decode()
                if not line:
                    raise RuntimeError(f"iii-engine exited with {await proc.wait()}: {stderr_path.read_text()}")
                if line.startswith(READY_PREFIX):
                    return EngineProcess(proc, line[len(READY_PREFIX):].strip(), stderr_path)
        except TimeoutError:
            raise RuntimeError(f"iii-engine not ready after {ready_within} s: {stderr_path.read_text()}") from None

    yield start
    for proc in started:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Threads switch as often as the interpreter lets them, so a race between threads shows within a few rounds."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.fixture
def urandom_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of every ``os.urandom`` read made while the test runs (the reads still return random bytes)."""
    reads: list[int] = []
    urandom = os.urandom

    def counted(n: int) -> bytes:
        reads.append(n)
        return urandom(n)

    monkeypatch.setattr(os, "urandom", counted)
    return reads


@pytest.fixture
def no_gc() -> Iterator[None]:
    """The cycle collector off for the test: what must be freed at once (a closed connection, a loan) is seen not
    to wait for it."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.fixture
def caplog(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """pytest's ``caplog``, with earlier tests' garbage collected first: a task another test left pending is
    destroyed by the collector whenever it next runs, and its ERROR line would land in this test's records."""
    gc.collect()
    return caplog
