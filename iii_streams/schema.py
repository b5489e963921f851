"""The SQL schema of :class:`~iii_streams.sql.SQLStream` (created by the Alembic migrations in ``migrations/``).

One table, ``iii_stream_items``. Stream, group and item id are kept as separate text columns, so names may hold
any character (``:``, ``*``, quotes, SQL fragments) and ``list_groups`` is exact. Lookups go through fixed-size
hash keys instead of the text columns, so very long ids never hit an index size limit (PostgreSQL's B-tree
entries are limited to about 2.7 kB). ``id`` grows with insertion and gives ``list`` its order. ``value`` is the
item's compact JSON text (not ``JSONB``, which would reorder keys).

Example:
    >>> item_key("s", "g", "i") == item_key("s", "g", "i"), item_key("s:g", "i", "") == item_key("s", "g:i", "")
    (True, False)
"""

from __future__ import annotations

import functools
from hashlib import blake2b
from typing import Final

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, MetaData, Table, Text

__all__ = ["TABLE_NAME", "VERSION_TABLE", "group_key", "item_key", "items", "metadata", "stream_key"]

TABLE_NAME: Final = "iii_stream_items"
VERSION_TABLE: Final = "iii_streams_alembic_version"  # not "alembic_version": the database may be the app's own

metadata = MetaData()

items = Table(
    TABLE_NAME,
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("item_key", LargeBinary(16), nullable=False, unique=True),
    Column("group_key", LargeBinary(16), nullable=False),
    Column("stream_key", LargeBinary(16), nullable=False),
    Column("stream_name", Text, nullable=False),
    Column("group_id", Text, nullable=False),
    Column("item_id", Text, nullable=False),
    Column("value", Text, nullable=False),
    Index("ix_iii_stream_items_group", "group_key", "id"),
    Index("ix_iii_stream_items_stream", "stream_key", "group_key"),
)


def _digest(*parts: str) -> bytes:
    h = blake2b(digest_size=16)
    for part in parts:
        raw = part.encode("utf-8", "surrogatepass")
        h.update(len(raw).to_bytes(8, "little"))  # length prefix: ("a:b", "c") and ("a", "b:c") differ
        h.update(raw)
    return h.digest()


def stream_key(stream_name: str) -> bytes:
    """16-byte key of a stream.

    Example:
        >>> len(stream_key("orders")), stream_key("orders") == stream_key("orders"), stream_key("a") == stream_key("b")
        (16, True, False)
    """
    return _digest(stream_name)


def group_key(stream_name: str, group_id: str) -> bytes:
    """16-byte key of a group.

    Example:
        >>> group_key("orders", "eu") == group_key("orders", "eu"), group_key("a:b", "c") == group_key("a", "b:c")
        (True, False)
    """
    return _digest(stream_name, group_id)


def item_key(stream_name: str, group_id: str, item_id: str) -> bytes:
    """16-byte key of an item (the table's unique lookup key).

    Example:
        >>> from sqlalchemy import select
        >>> query = select(items.c.value).where(items.c.item_key == item_key("orders", "eu", "o-1"))
        >>> len(item_key("orders", "eu", "o-1")), item_key("s", "g", "i") == group_key("s", "g")
        (16, False)
    """
    if len(stream_name) + len(group_id) + len(item_id) <= _CACHED_NAME_CHARS:
        return _cached_item_key(stream_name, group_id, item_id)
    return _digest(stream_name, group_id, item_id)


_CACHED_NAME_CHARS: Final = 512  # longer names are hashed each time: the cache never holds much text


@functools.lru_cache(maxsize=4096)
def _cached_item_key(stream_name: str, group_id: str, item_id: str) -> bytes:
    # hashing was ~10 % of a contended update's store CPU, and a hot item is written again and again
    return _digest(stream_name, group_id, item_id)
