"""``iii-streams``: command-line tools for the stream stores.

``iii-streams migrate URL [--revision REV]`` applies the SQL schema migrations (SQLite or PostgreSQL);
``iii-streams current URL`` prints the applied revision.

Example:
    >>> main(["migrate", "sqlite+aiosqlite://"])
    migrated sqlite+aiosqlite:// to 0001_stream_items
    0
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import create_async_engine

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iii-streams", description="Tools for iii stream stores.")
    sub = parser.add_subparsers(dest="command", required=True)
    migrate = sub.add_parser("migrate", help="apply the SQL schema migrations to a database")
    migrate.add_argument("url", help="database URL, e.g. sqlite+aiosqlite:///streams.db or postgresql+asyncpg://…")
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    current = sub.add_parser("current", help="print the applied schema revision")
    current.add_argument("url", help="database URL")
    return parser


async def _current(url: str) -> str | None:
    from .migrate import current_revision, normalize_url

    engine = create_async_engine(normalize_url(url))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(current_revision)
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``iii-streams`` console script; returns the exit status."""
    from .migrate import migrate

    args = _parser().parse_args(argv)
    try:
        if args.command == "migrate":
            revision = asyncio.run(migrate(args.url, args.revision))
            print(f"migrated {args.url} to {revision}")
        else:
            print(asyncio.run(_current(args.url)) or "none")
    except Exception as exc:  # the command line wants one readable line, not a traceback
        print(f"iii-streams {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
