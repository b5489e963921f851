"""Fixtures: a channel relay served on a free port (``relay_base``), in our mode and in production mode."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from iii_engine.channels import ChannelRelay

from .relay_server import relay_server


@pytest.fixture(params=[False, True], ids=["ours", "production"])
async def any_relay(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, ChannelRelay]]:
    """``(ws_base, relay)`` for both relay behaviours."""
    async with relay_server(ChannelRelay(production_mode=request.param)) as served:
        yield served


@pytest.fixture
async def relay() -> AsyncIterator[tuple[str, ChannelRelay]]:
    """``(ws_base, relay)`` with our behaviour and a short attach deadline."""
    async with relay_server(ChannelRelay(attach_timeout_s=2.0, max_message_size=1 << 20)) as served:
        yield served


@pytest.fixture
async def prod_relay() -> AsyncIterator[tuple[str, ChannelRelay]]:
    """``(ws_base, relay)`` mimicking the production engine."""
    async with relay_server(ChannelRelay(production_mode=True, attach_timeout_s=2.0)) as served:
        yield served
