"""A SQLite URL's ``uri`` option is read as SQLAlchemy's sqlite driver reads it (``sqlalchemy.util.asbool``), so
the store checks the file the driver hands SQLite; a value the driver refuses is refused naming the option.

Before: a copy of asbool's true words, read off ``str()`` of the option. Given twice (``?uri=true&uri=1``) the
driver read it as true (SQLite opened ``/srv/s.db``) while the store checked ``<cwd>/file:/srv/s.db``; a bad
value failed in ``create_async_engine`` with ``String is not true/false: 'maybe'``, naming neither the option
nor the URL.
"""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from iii_streams.sql import SQLStream, _file_path

WORDS = ["true", "Yes", " ON ", "y", "T", "1", "false", "No", "off", "n", "F", "0"]


def _driver_reads_uri(url: str) -> bool:
    """Whether SQLAlchemy's aiosqlite dialect hands SQLite the database as a ``file:`` URI."""
    engine = create_async_engine(url)
    try:
        (filename,), _ = engine.dialect.create_connect_args(make_url(url))
    finally:
        engine.sync_engine.dispose()
    return bool(str(filename).startswith("file:"))


@pytest.mark.parametrize("query", [f"uri={word}" for word in WORDS] + [""])
def test_the_store_checks_the_file_the_driver_opens(query: str) -> None:
    url = f"sqlite+aiosqlite:///file:/srv/s.db?{query}".rstrip("?")
    driver_uri = _driver_reads_uri(url)
    assert (_file_path(make_url(url)) == "/srv/s.db") is driver_uri, (query, driver_uri, _file_path(make_url(url)))


def test_a_uri_value_that_is_neither_true_nor_false_is_refused_naming_the_option() -> None:
    with pytest.raises(ValueError, match=r"^SQLite URL option uri='maybe': not true or false \(true, yes"):
        SQLStream.from_url("sqlite+aiosqlite:///file:/srv/s.db?uri=maybe")


@pytest.mark.parametrize("query", ["uri=true&uri=1", "uri=no&uri=no", "uri=false&uri=0", "uri=maybe&uri=0"])
def test_a_repeated_uri_option_is_refused_naming_it(query: str) -> None:
    # the driver's asbool took any repeated value for true (a tuple): "uri=false&uri=0" opened a file: URI
    with pytest.raises(ValueError, match=r"^SQLite URL option uri is given 2 times \('.*', '.*'\): give it once$"):
        SQLStream.from_url(f"sqlite+aiosqlite:///file:/srv/s.db?{query}")
