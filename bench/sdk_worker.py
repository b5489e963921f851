"""One benchmark worker, runnable under our SDK or the reference SDK (same public API).

Usage: python sdk_worker.py URL serve            -> registers bench::echo, prints "ready", serves until stdin closes
       python sdk_worker.py URL call N CONCURRENCY [thread] -> prints {"calls": N, "seconds": ..., "cpu": ...}
                                                      as JSON (``cpu``: process CPU seconds, all threads, during the
                                                      calls; ``thread``: sequential calls from a thread other than
                                                      the main one, as a web server's request threads make them)
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from typing import Any

from iii import InitOptions, register_worker


def main() -> None:
    url, role = sys.argv[1], sys.argv[2]
    client = register_worker(url, InitOptions(worker_name=f"bench-{role}"))
    if role == "serve":

        async def echo(data: Any) -> Any:
            return data

        client.register_function("bench::echo", echo)
        client.list_functions()  # barrier: the registration reached the engine
        print("ready", flush=True)
        sys.stdin.read()
    else:
        n, concurrency = int(sys.argv[3]), int(sys.argv[4])
        payload = {"n": 1, "s": "hello"}
        for _ in range(50):  # warm up
            client.trigger({"function_id": "bench::echo", "payload": payload})
        start, cpu = time.perf_counter(), time.process_time()
        if concurrency == 1:

            def calls() -> None:
                for _ in range(n):
                    client.trigger({"function_id": "bench::echo", "payload": payload})

            if sys.argv[5:] == ["thread"]:
                caller = threading.Thread(target=calls)
                caller.start()
                caller.join()
            else:
                calls()
        else:

            async def run() -> None:
                sem = asyncio.Semaphore(concurrency)

                async def one() -> None:
                    async with sem:
                        await client.trigger_async({"function_id": "bench::echo", "payload": payload})

                await asyncio.gather(*(one() for _ in range(n)))

            # The reference SDK's async methods only work on its private loop, so run there for both.
            asyncio.run_coroutine_threadsafe(run(), client._loop).result()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(json.dumps({"calls": n, "seconds": seconds, "cpu": cpu}), flush=True)
    client.shutdown()


if __name__ == "__main__":
    main()
