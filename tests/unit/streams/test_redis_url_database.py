"""A Redis URL whose database is not plainly written is refused, naming the URL with its password masked.

Before: redis-py reads the path as ``int(path.replace("/", ""))`` and on a ValueError uses database 0 without a word:
``redis://…/l`` (a typo of ``/1``) went to database 0, ``redis://…/1/5`` to database 15, and ``?db=`` silently beat
the path. Every client made from a URL goes through ``waiting_client``, which now checks it first.
"""

from __future__ import annotations

import pytest

from iii_streams import open_stream
from iii_streams.redis import RedisStream, check_redis_url, waiting_client

REFUSED = [
    ("redis://:hunter2@127.0.0.1:6379/l", "got '/l' (redis-py would silently use database 0 for it)"),
    ("redis://127.0.0.1:6379/1/5", "got '/1/5' (redis-py would read it as database 15)"),
    ("redis://127.0.0.1:6379/abc", "got '/abc'"),
    ("rediss://127.0.0.1:6379/-1", "got '/-1'"),
    ("redis://127.0.0.1:6379/+1", "got '/+1'"),
    ("redis://127.0.0.1:6379/1_0", "got '/1_0'"),
    ("redis://127.0.0.1:6379/%201", "got '/ 1'"),
    ("redis://127.0.0.1:6379/\u0661", "got '/\u0661'"),
    ("redis://127.0.0.1:6379/1/", "got '/1/'"),
    ("redis://127.0.0.1:6379/1?db=2", "names database 1 in its path and 2 in ?db=: keep one of them"),
    ("redis://127.0.0.1:6379?db=-3", "must be a database number (0, 1, ...), got '-3'"),
    ("redis://127.0.0.1:6379?db=", "must be a database number (0, 1, ...), got ''"),
    ("redis://127.0.0.1:6379?db=1&db=2", "gives ?db= more than once"),
    ("unix:///run/redis.sock?db=x", "got 'x'"),
]


@pytest.mark.parametrize(("url", "says"), REFUSED)
def test_a_database_not_plainly_written_is_refused_by_every_client_maker(url: str, says: str) -> None:
    for make in (check_redis_url, waiting_client, RedisStream.from_url, open_stream):
        with pytest.raises(ValueError) as raised:
            make(url)
        message = str(raised.value)
        assert says in message, (make, message)
        assert "hunter2" not in message
        assert "Redis URL '" in message


def test_the_password_is_masked() -> None:
    with pytest.raises(ValueError, match=r"'redis://:\*\*\*@127\.0\.0\.1:6379/l'"):
        open_stream("redis://:hunter2@127.0.0.1:6379/l")


@pytest.mark.parametrize(("url", "db"), [
    ("redis://127.0.0.1:6379", 0), ("redis://127.0.0.1:6379/", 0), ("redis://127.0.0.1:6379/0", 0),
    ("rediss://cache/15", 15), ("redis://cache/007", 7), ("redis://cache/3?db=3", 3), ("redis://cache?db=4", 4),
    ("unix:///run/redis.sock?db=2", 2), ("unix:///run/redis.sock", 0), ("redis://cache/2?key_prefix=a&channel=b", 2),
])
def test_plain_databases_are_taken_as_redis_py_takes_them(url: str, db: int) -> None:
    assert check_redis_url(url) == db
    assert waiting_client(url.split("?key_prefix")[0]).connection_pool.connection_kwargs.get("db", 0) == db


@pytest.mark.parametrize("url", [
    "redis://:Xk3q/SECRETtail9+w=@127.0.0.1:6379/0",  # an unencoded '/' in the password: the rest read as the path
    "redis://user:pa?db=SECRET@127.0.0.1:6379/0",  # a '?': the rest read as the query
    "redis://user:pa/SECRET@127.0.0.1:6379",
    "redis://:pw#SECRET@h/0",  # a '#': the rest read as the fragment (redis-py then connected to localhost)
])
def test_no_part_of_a_password_the_url_cuts_short_is_quoted(url: str) -> None:
    """(before: the error quoted the path or the ?db= value as read, which held the rest of such a password, beside
    a URL that looked masked: "got '/SECRETtail9+w=@127.0.0.1:6379/0'".)"""
    with pytest.raises(ValueError) as refused:
        check_redis_url(url)
    message = str(refused.value)
    assert "SECRET" not in message and "pw#" not in message, message
    assert "percent-encode" in message
