"""A store URL's password is masked wherever a message shows the URL: in its userinfo up to the authority's last
``@``, and in the query (``password``, ``sslpassword``, ``passwd``, ``pwd``, any case), which redis-py and asyncpg
both read.

Before: ``redis://app:hun@ter2@h/0`` was shown as ``redis://app:***@ter2@h/0`` (half the password), and a
``?password=`` value was shown whole: in the engine's start notice, in SQLStream's messages (SQLAlchemy's
``hide_password`` hides only ``user:password@``) and in RedisStream's wrong-scheme error (not masked at all).
"""

from __future__ import annotations

import asyncio

import pytest

from iii._cli import mask_passwords
from iii_engine.closing import start_waits_for
from iii_engine.modules.stream.settings import StateSettings
from iii_streams.redis import RedisStream
from iii_streams.sql import SQLStream

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(("text", "shown"), [
    ("redis://app:hun@ter2@h/0", "redis://app:***@h/0"),
    ("redis://:a@b@c@cache:6379", "redis://:***@cache:6379"),
    ("postgresql://u:pa/ss?x@h/db", "postgresql://u:***@h/db"),  # SQLAlchemy reads the password up to its '@'
    ("redis://127.0.0.1:6390/0?password=hunter2", "redis://127.0.0.1:6390/0?password=***"),
    ("pg://h/d?sslmode=require&SSLPassword=k3y&passwd=p,w&Pwd=x#y&password=",
     "pg://h/d?sslmode=require&SSLPassword=***&passwd=***&Pwd=***&password=***"),
    ("got 'redis://h/0?password=hunter2', try again", "got 'redis://h/0?password=***', try again"),
    ("run `migrate 'pg://h/d?password=hunter2'` now", "run `migrate 'pg://h/d?password=***'` now"),
    ("pg://h/d?pwd=it's'%41", "pg://h/d?pwd=***"),
    ("redis://app:s3cret@h/0?client_name=a@b&password=x y", "redis://app:***@h/0?client_name=a@b&password=*** y"),
])
def test_masked(text: str, shown: str) -> None:
    assert mask_passwords(text) == shown


@pytest.mark.parametrize("text", [
    "redis://h:6379/0", "redis://:@h/0", "pg://h/d?passfile=/home/app/.pgpass&user_password_hint=1",
    "cannot open postgresql://db/app and redis://cache:6379/0?db=1", "sqlite+aiosqlite:////srv/a:b@c.db",
])
def test_left_as_it_is(text: str) -> None:
    assert mask_passwords(text) == text


def test_the_start_notice_masks_a_query_password() -> None:
    state = type("Module", (), {"settings": StateSettings(store_url="redis://127.0.0.1:6390/0?password=hunter2")})()

    async def notice() -> str:
        return start_waits_for(state, asyncio.get_running_loop().create_future())

    assert asyncio.run(notice()) == "its store redis://127.0.0.1:6390/0?password=***"


def test_redis_stream_wrong_scheme_masks_the_password() -> None:
    with pytest.raises(ValueError) as failure:
        RedisStream.from_url("postgresql://app:s3cret@db/x?sslpassword=k3y")
    assert str(failure.value) == ("RedisStream needs a redis://, rediss:// or unix:// URL, got "
                                  "'postgresql://app:***@db/x?sslpassword=***'")


def test_sql_stream_messages_mask_a_query_password() -> None:
    store = SQLStream.from_url("postgresql+asyncpg://postgres@h/db?password=hunter2")
    assert store._database() == "PostgreSQL database postgresql+asyncpg://postgres@h/db?password=***"
    # quoted for the shell (the '?'), and the reader is told to put the password back
    assert store._migrate_hint() == ("run `iii-streams migrate 'postgresql+asyncpg://postgres@h/db?password=***'` "
                                     "(with the real password in place of ***)")


@pytest.mark.filterwarnings("ignore:Query string argument")  # pysqlite ignores the key; the message still shows it
def test_sqlite_path_hint_masks_a_query_password() -> None:
    store = SQLStream.from_url("sqlite+aiosqlite:///nodir_mask/s.db?pwd=hunter2")
    assert store._path_hint() == (" (directory nodir_mask does not exist; a relative path: use four slashes for an "
                                  "absolute one, sqlite+aiosqlite:////nodir_mask/s.db?pwd=***)")
