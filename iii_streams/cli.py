"""``iii-streams``: command-line tools for the stream stores.

``iii-streams migrate URL [--revision REV]`` applies the SQL schema migrations (SQLite or PostgreSQL; a missing
SQLite file is created); ``iii-streams current URL`` prints the applied revision (``none`` for a database never
migrated, with a hint on stderr to migrate it) and never creates anything.

Every failure is one line on stderr, ``iii-streams: …``, with URL passwords masked: exit status 2 for a usage
error (unknown command, unsupported URL), 1 when the work failed (database unreachable, missing package).

Example:
    >>> main(["migrate", "sqlite+aiosqlite://"])
    migrated sqlite+aiosqlite:// from none to 0001_stream_items
    0
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from iii._cli import exit_interrupted, joined_timeouts, seconds

from .messages import OneLineParser, error_line, mask_passwords

__all__ = ["main"]

PROG = "iii-streams"
COMMANDS = ("migrate", "current")


class _Failure(Exception):
    """A one-line reason the command failed (exit status 1)."""


def _parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description="Tools for iii stream stores.")
    # Not required here: argparse's "required: command" did not name the commands; main() says it with them.
    sub = parser.add_subparsers(dest="command")
    migrate = sub.add_parser("migrate", help="apply the SQL schema migrations to a database")
    migrate.add_argument("url", help="database URL, e.g. sqlite+aiosqlite:///streams.db or postgresql+asyncpg://…")
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    current = sub.add_parser("current", help="print the applied schema revision")
    current.add_argument("url", help="database URL")
    for command in (migrate, current):
        command.add_argument("--timeout", type=seconds, default=None, metavar="SECONDS",
                             help="give up when the database has not answered within SECONDS, connecting and "
                                  "waiting for another migration included (default: 120)")
    return parser


def _sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names (``None`` for an in-memory database or a server URL)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


async def _current(url: str, timeout: float) -> str | None:
    from .migrate import revision_of

    file = _sqlite_file(url)
    if file is not None and not file.exists():
        # connecting would create an empty file: a typo in the path must not leave one behind
        raise _Failure(f"database file {file} does not exist")
    return await revision_of(url, timeout=timeout)


def _run(command: str, url: str, revision: str, shown: str, timeout: float | None) -> str:
    """Do the work on ``url`` (shown to the user as ``shown``) within ``timeout`` seconds (``None``: the default);
    returns the line to print."""
    from .migrate import HEAD, MIGRATE_TIMEOUT_S, upgrade

    limit = MIGRATE_TIMEOUT_S if timeout is None else timeout
    try:
        if command == "current":
            return asyncio.run(_current(url, limit)) or "none"
        before, after = asyncio.run(upgrade(url, revision, timeout=limit))
    except TimeoutError as exc:
        if not str(exc):  # the driver's own, a connect's (asyncpg's bound: 60 s); ours names the database
            raise _Failure(f"connecting to {shown} timed out") from None
        waits = " (or another migration of it is still running)" if command == "migrate" else ""
        raise _Failure(f"{shown} gave no answer within {limit:g} s{waits}; --timeout SECONDS sets the "
                       "limit") from None
    if revision not in (HEAD, "heads") and not (after or "").startswith(revision):
        # Alembic's upgrade to a revision below the applied one does nothing: "already at" read as success
        raise _Failure(f"{shown} is at {after or 'none'}, not at {revision}: migrate only upgrades (there is no "
                       "downgrade)")
    if before == after:
        return f"{shown} is already at {after or 'none'}"
    return f"migrated {shown} from {before or 'none'} to {after}"


def _path_hint(url: str) -> str:
    """The SQL store's hint for a SQLite file in a directory that does not exist (the store's own errors carry it)."""
    from .sql import missing_directory_hint

    return missing_directory_hint(url)


def _check_revision(revision: str) -> None:
    """``--revision`` names ``head``, ``base`` or a shipped revision (or the start of one's id, as Alembic takes it);
    anything else is a usage error naming them (Alembic's own error blamed the database's version table)."""
    from .migrate import HEAD, shipped_revisions

    known = shipped_revisions()
    if revision in (HEAD, "heads", "base") or (revision and any(name.startswith(revision) for name in known)):
        return
    raise ValueError(f"--revision {revision!r} is not a revision of this version (use head, or one of: "
                     f"{', '.join(known)}; migrate only upgrades)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``iii-streams`` console script; returns the exit status.

    Example:
        >>> main(["current", "sqlite+aiosqlite://"])  # an in-memory database, never migrated
        none
        0
    """
    parser = _parser()
    args = parser.parse_args(joined_timeouts(argv))
    if args.command is None:
        parser.error(f"the following arguments are required: a command ({' or '.join(COMMANDS)})")
    try:
        from .migrate import normalize_url  # needs the sql extra (SQLAlchemy, Alembic)

        url = normalize_url(args.url)
        if args.command == "migrate":
            _check_revision(args.revision)
    except ModuleNotFoundError as exc:
        print(f"{PROG}: {args.command} needs the sql extra: {error_line(exc)}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    try:
        revision = args.revision if args.command == "migrate" else "head"
        shown = mask_passwords(args.url)
        line = _run(args.command, url, revision, shown=shown, timeout=args.timeout)
        print(line)  # "none" stays the whole of stdout for a database never migrated: scripts read it
        if args.command == "current" and line == "none":
            print(f"{PROG}: current: no stream schema in {shown}: run iii-streams migrate URL to create it",
                  file=sys.stderr)
    except _Failure as exc:
        print(f"{PROG}: {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: {args.command}: interrupted", file=sys.stderr)
        return exit_interrupted(own_process=argv is None)
    except Exception as exc:  # the command line wants one readable line, not a traceback
        action = "migrate" if args.command == "migrate" else "read the revision of"
        print(f"{PROG}: cannot {action} {mask_passwords(args.url)}: {error_line(exc)}{_path_hint(url)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
