"""The stream socket's ``max_clients`` defaults to a quarter of the process's open-file limit (at most 10,000).

Before: 10,000 whatever the limit, so under ``ulimit -n 256`` stream clients could take every descriptor and then
workers could not connect (the REST API's ``max_connections`` takes half the limit; the rest stays for workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.integration.engine.raw import RawWorker
from tests.services import logged_port

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("runs an engine process under a low open-file limit")]

ROOT = Path(__file__).resolve().parents[3]
LIMIT = 256  # soft RLIMIT_NOFILE of the processes started here
READY_PREFIX = "iii engine listening on "


def _low_limit() -> None:
    """In the child before exec: the soft open-file limit down to LIMIT."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, hard))


def test_the_defaults_follow_a_low_open_file_limit() -> None:
    code = ("import json; from iii_engine.modules.stream.settings import StreamSettings; "
            "from iii_engine.modules.http.settings import ApiSettings; "
            "print(json.dumps([StreamSettings.parse({}).max_clients, ApiSettings.parse({}).max_connections, "
            "StreamSettings.parse({'max_clients': 1000}).max_clients]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=20,
                         preexec_fn=_low_limit, check=True).stdout
    # before: [10000, 128, 1000]
    assert json.loads(out) == [LIMIT // 4, LIMIT // 2, 1000]


async def test_stream_clients_under_a_low_limit_leave_descriptors_for_workers(tmp_path: Path) -> None:
    # port 0 and the port it logged: a port picked here and closed could be another test process's first
    config = tmp_path / "engine.yaml"
    config.write_text("modules:\n  - class: modules::stream::StreamModule\n"
                      "    config: {host: 127.0.0.1, port: 0}\n")
    log = tmp_path / "engine.log"
    with log.open("wb") as stderr:
        engine = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "iii_engine", "--port", "0", "--config", str(config), cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=stderr, preexec_fn=_low_limit)
    clients: list[websockets.ClientConnection] = []
    try:
        assert engine.stdout is not None
        line = (await asyncio.wait_for(engine.stdout.readline(), 15)).decode()
        assert line.startswith(READY_PREFIX), log.read_text()
        stream_url = f"ws://127.0.0.1:{logged_port(log.read_text(), 'stream socket')}/"
        for n in range(LIMIT // 4):
            client = await websockets.connect(stream_url, compression=None)
            clients.append(client)
            # a sync answer: the socket serves the client, so it counts against max_clients
            await client.send(json.dumps({"type": "join", "data": {"subscriptionId": f"s{n}", "streamName": "s",
                                                                   "groupId": "g"}}))
            assert json.loads(await asyncio.wait_for(client.recv(), 10))["event"]["type"] == "sync"
        # before: accepted, as every client after it until the engine ran out of descriptors
        with pytest.raises(InvalidStatus) as refused:
            clients.append(await websockets.connect(stream_url, compression=None))
        assert refused.value.response.status_code == 503
        assert refused.value.response.body == f"too many stream clients connected (max_clients {LIMIT // 4})\n".encode()
        worker = await RawWorker.connect(line[len(READY_PREFIX):].strip())  # workers still connect
        assert "functions" in await worker.result_of("engine::functions::list", {})
        await worker.close()
    finally:
        for client in clients:
            await client.close()
        # an engine that exited (a failed start) is not killed: ProcessLookupError here hid the assertion above
        if engine.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it may exit between the check and the kill
                engine.kill()
        await engine.wait()
