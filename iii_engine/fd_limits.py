"""Defaults derived from the process's open-file limit (``RLIMIT_NOFILE``), for settings that bound connections.

Each client connection holds a file descriptor; a bound that ignores the limit lets clients take every descriptor, and
then workers (and the engine's own stores and files) can no longer connect or open anything. Each listener takes a
share of the soft limit: the REST API half, the stream socket a quarter (capped at 10,000), the rest stays for the
engine's workers, stores and files.

Example:
    >>> open_files_share(4, limit=256), open_files_share(4, limit=100_000, at_most=10_000), open_files_share(2, limit=1)
    (64, 10000, 1)
    >>> open_files_share(2, limit=None)  # no limit (or no ``resource`` module, on Windows)
    10000
"""

from __future__ import annotations

__all__ = ["NO_LIMIT_DEFAULT", "open_file_limit", "open_files_share"]

# what a share is where the process has no open-file limit to take it of
NO_LIMIT_DEFAULT = 10_000
# open_files_share's ``limit`` default: read the process's own
_CURRENT = -1


def open_file_limit() -> int | None:
    """The process's soft limit on open files, or ``None`` where there is none (``RLIM_INFINITY``, or no
    ``resource`` module).

    Example:
        >>> limit = open_file_limit()
        >>> limit is None or limit > 0
        True
    """
    try:
        import resource  # not on Windows
    except ImportError:
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return None
    return int(soft)


def open_files_share(divisor: int, *, at_most: int | None = None, limit: int | None = _CURRENT) -> int:
    """``limit // divisor`` (at least 1, at most ``at_most``): the share of the soft open-file limit (the process's
    own unless ``limit`` is given) one kind of client connection may hold; :data:`NO_LIMIT_DEFAULT` (or
    ``at_most``, if smaller) where there is no limit.

    Example:
        >>> import resource
        >>> soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        >>> open_files_share(2) == (soft // 2 if soft != resource.RLIM_INFINITY else NO_LIMIT_DEFAULT)
        True
    """
    if limit == _CURRENT:
        limit = open_file_limit()
    share = NO_LIMIT_DEFAULT if limit is None else max(1, limit // divisor)
    return share if at_most is None else min(share, at_most)
