"""Fixtures of the engine's stream and state module tests: the stores of ``tests/integration/streams/conftest.py``
(``store_kind``, ``store_url``, ``redis_key_prefix``), for the engine's ``store_url`` options.

Example:
    async def test_x(store_url: str) -> None:          # runs once on each of memory, SQLite, PostgreSQL, Redis
        async with Engine(config=engine_config(store_url=store_url)) as engine: ...
"""

from tests.integration.streams.conftest import redis_key_prefix, store_kind, store_url

__all__ = ["redis_key_prefix", "store_kind", "store_url"]
