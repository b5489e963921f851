"""Attack on a3253f7 from threads: many threads calling ``trigger`` and sending telemetry frames (OTLP/MTRC/LOGS
binary frames on the control socket) while the client's loop corks and flushes; async calls batched on the loop
meanwhile. Every call gets its own answer."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from .conftest import Harness, MakeWorker

THREADS = 8
CALLS = 150


def test_threads_triggering_and_sending_telemetry_while_the_loop_batches(served: Harness,
                                                                         make_worker: MakeWorker) -> None:
    a, b = make_worker("a"), make_worker("b")
    a.register_function("echo::t4", lambda data: [data["t"], data["i"]] if isinstance(data, dict) else data)
    served.wait_registered("echo::t4")
    wrong: list[tuple[Any, Any]] = []
    start = threading.Barrier(THREADS + 1)

    def caller(n: int) -> None:
        start.wait(10)
        for i in range(CALLS):
            payload = {"t": n, "i": i}
            if i % 5 == 0:
                b.send_telemetry(b"LOGS" + b'{"resourceLogs":[]}')
                b.send_telemetry(b"MTRC" + b'{"resourceMetrics":[]}')
            got = b.trigger({"function_id": "echo::t4", "payload": payload, "timeout_ms": 20_000})
            if got != [n, i]:
                wrong.append((payload, got))

    async def batched() -> list[Any]:
        return list(await asyncio.gather(*(b.trigger_async({"function_id": "echo::t4", "payload": k})
                                           for k in range(300))))

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    start.wait(10)
    assert b._run_on_loop(batched()) == list(range(300))
    for thread in threads:
        thread.join(25)
    assert not any(thread.is_alive() for thread in threads)
    assert wrong == []
    assert len(b._calls) == 0
