"""``iii-channel serve`` says when its function is served again after the engine came back: one line
``serving FUNCTION again`` on stderr (the SDK only said "Connection to … failed" while it was away)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from iii_engine import Engine, EngineConfig
from tests.integration.channels.test_cli import _finish, _start

_FUNCTION = "files::back"


async def _line_with(stream: asyncio.StreamReader, text: str, seen: list[str]) -> None:
    while not any(text in line for line in seen):
        line = (await asyncio.wait_for(stream.readline(), 15)).decode()
        assert line, f"serve ended before {text!r}: {seen}"
        seen.append(line)


async def test_serve_says_once_when_the_function_is_back(tmp_path: Path) -> None:
    config = EngineConfig(host="127.0.0.1", port=0, modules=[])
    first = Engine(config=config)
    await first.start()
    port = int(first.url.rsplit(":", 1)[1])
    second = Engine(config=config.with_overrides(port=port))
    serve = await _start("serve", "--function", _FUNCTION, "--out", str(tmp_path), "--engine", first.url,
                         "--no-progress")
    seen: list[str] = []
    try:
        assert serve.stderr is not None
        await _line_with(serve.stderr, f"serving {_FUNCTION} on ", seen)
        await first.stop()
        await _line_with(serve.stderr, "failed", seen)  # the SDK's line of a refused reconnection
        await second.start()
        # before: nothing was printed when the registration was back
        await _line_with(serve.stderr, f"serving {_FUNCTION} again", seen)
        assert _FUNCTION in {f["function_id"] for f in second.registry.function_infos(include_internal=False)}
        serve.send_signal(signal.SIGTERM)
        done = await _finish(serve, first="".join(seen))
    finally:
        if serve.returncode is None:
            serve.kill()
            await serve.wait()
        await first.stop()
        await second.stop()
    assert done.rc == 0, done.stderr
    assert done.stderr.count(f"serving {_FUNCTION} again\n") == 1, done.stderr
    assert done.stderr.index(f"serving {_FUNCTION} on") < done.stderr.index("failed")
