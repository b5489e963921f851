"""A PostgreSQL store URL naming an option asyncpg does not take is refused when the store is opened, naming it.

Before, ``postgresql+asyncpg://…?create=true`` opened without a word and every operation then failed with asyncpg's
bare ``TypeError: connect() got an unexpected keyword argument 'create'``; an engine with such a ``store_url``
started and failed each stream call that way.
"""

from __future__ import annotations

import pytest

from iii_engine.modules.stream.store import open_module_store
from iii_engine.settings import ConfigError
from iii_streams import open_stream

URL = "postgresql+asyncpg://app:secret@db.invalid/app"


@pytest.mark.parametrize("query, named", [("?create=true", "'create'"), ("?bogus=1&ssl=disable&zz=2", "'bogus', 'zz'")])
def test_an_option_asyncpg_does_not_take_is_refused_at_open(query: str, named: str) -> None:
    with pytest.raises(ValueError, match="asyncpg takes no such option") as refused:
        open_stream(URL + query)
    assert named in str(refused.value) and "secret" not in str(refused.value)


async def test_the_options_asyncpg_and_its_dialect_take_still_open() -> None:
    store = open_stream(URL + "?ssl=disable&command_timeout=5&prepared_statement_cache_size=0")
    assert store.dialect == "postgresql"  # type: ignore[attr-defined]
    await store.aclose()  # never connected


def test_an_engine_store_url_with_such_an_option_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match=r"store_url.*'create'"):
        open_module_store("stream", {"store_url": URL + "?create=true"}, publish_events=True)
