"""A SQL store's prepare at its module's start (connect, schema check or migration) follows the module's start bound.

Before: it had 10 s whatever the entry's ``start_timeout_ms``. A lower one cut the prepare first with the engine's
generic "its start did not end within N s" (the database unnamed); a higher one, set for a slow database or a
migration waiting for its turn, was no use: the prepare failed at 10 s all the same.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import ModuleStartError
from iii_engine.modules.stream import store as store_module
from tests.integration.engine_streams.test_feed_close_bounds import silent_server

pytestmark = pytest.mark.timeout(30)

_STATE = "modules::state::StateModule"
__all__ = ["silent_server"]  # a TCP server that never answers (a silent PostgreSQL): the fixture


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[tuple[str, sqlite3.Connection]]:
    """A SQLite file another connection (as another process would) holds an exclusive lock on; its URL."""
    path = tmp_path / "state.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield f"sqlite+aiosqlite:///{path}", holder
    finally:
        if holder.in_transaction:
            holder.rollback()
        holder.close()


def _engine(url: str, start_timeout_ms: int) -> Engine:
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[
        ModuleSpec.parse({"class": _STATE, "config": {"store_url": url}, "start_timeout_ms": start_timeout_ms})]))


async def test_a_lower_start_timeout_ms_bounds_the_prepare_which_names_the_database(silent_server: int) -> None:
    engine = _engine(f"postgresql+asyncpg://postgres@127.0.0.1:{silent_server}/test", 1500)
    async with asyncio.timeout(5):
        with pytest.raises(ModuleStartError) as failure:
            await engine.start()
    message = str(failure.value)
    # before: "its start (module state) did not end within 1.5 s, waiting in ..." (the 10 s prepare cut by the start)
    # now: the prepare ends first, within what is left of the 1.5 s (the store's import took some), naming the server
    assert re.search(f"cannot open PostgreSQL database postgresql[+]asyncpg://postgres@127[.]0[.]0[.]1:{silent_server}"
                     r"/test: no answer within [01][.]\d+ s$", message), message
    assert not engine.ready.is_set()


async def test_a_higher_start_timeout_ms_extends_the_prepare(locked: tuple[str, sqlite3.Connection],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    url, holder = locked
    monkeypatch.setattr(store_module, "_PREPARE_TIMEOUT_S", 0.3)  # the default bound, made small
    engine = _engine(url, 5000)
    # the other writer lets go after 1 s: past the default bound, well within the entry's
    asyncio.get_running_loop().call_later(1.0, holder.rollback)
    async with asyncio.timeout(5):
        await engine.start()  # before: ModuleStartError "... no answer within 0.3 s"
    try:
        assert engine.ready.is_set()
        await engine.invoke("state::set", {"scope": "s", "key": "k", "value": 1})
        assert await engine.invoke("state::get", {"scope": "s", "key": "k"}) == 1
    finally:
        await engine.stop()
