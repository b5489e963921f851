"""An alert webhook endpoint that holds every request until released: what the observability tests point alert
rules at to see deliveries in flight (at a stop, past their budget)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class HangingWebhook:
    """``url`` to post to; ``arrived``: the requests that came, in order; ``release`` lets them all be answered."""

    url: str = ""
    arrived: list[web.Request] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def post_endpoint(answer: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    """A local HTTP endpoint answering ``POST /hook`` with ``answer``; its URL."""
    app = web.Application()
    app.router.add_post("/hook", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def hanging_webhook() -> AsyncIterator[HangingWebhook]:
    """A local endpoint at ``POST /hook`` answering nothing until ``release`` is set (set on the way out)."""
    hook = HangingWebhook()

    async def hang(request: web.Request) -> web.Response:
        hook.arrived.append(request)
        await hook.release.wait()
        return web.Response(text="late")

    async with post_endpoint(hang) as url:
        hook.url = url
        try:
            yield hook
        finally:
            hook.release.set()  # (before the endpoint's cleanup, which waits for the requests it holds)
