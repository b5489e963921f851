"""How the observability module checks and shows the URLs it posts to (alert webhooks, the OTLP collector).

A webhook URL often carries its secret in its path (Slack's ``/services/T…/B…/SECRET``, Discord's, Teams',
PagerDuty's), so a log line or a health field shows such a URL as :func:`shown_url` does: scheme, host and port
(with the user info masked by :func:`~iii._cli.mask_passwords`), never the path nor the query.

Example:
    >>> shown_url("https://hooks.slack.com/services/T0AAA/B0BBB/SECRET")
    'https://hooks.slack.com/…'
    >>> host_problem("collector..example.com")
    'an empty label'
"""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, urlsplit

from iii._cli import mask_passwords

__all__ = ["host_problem", "post_url", "scrubbed", "shown_url"]

_HIDDEN = "/…"


def shown_url(url: str) -> str:
    """``url`` as logs and health show it: ``scheme://[user:***@]host[:port]``, then ``/…`` if it had a path, query
    or fragment; a relative URL (a redirect's ``Location: /x``) as ``/…``.

    Example:
        >>> shown_url("http://u:S3CRET@127.0.0.1:8080/hook?token=T0KEN")
        'http://u:***@127.0.0.1:8080/…'
        >>> shown_url("http://[::1]:4318"), shown_url("/landing?token=t"), shown_url("hooks.example.com/SECRET")
        ('http://[::1]:4318', '/…', 'hooks.example.com/…')
    """
    text = url.strip()
    try:
        parts = urlsplit(text)
    except ValueError:  # an unclosed "[": cut at the first path, query or fragment mark after the scheme
        parts = None
    if parts is not None and parts.scheme and parts.netloc:
        head = f"{parts.scheme}://{parts.netloc}"
        hidden = bool(parts.path.strip("/") or parts.query or parts.fragment)
    else:
        start = text.find("://") + 3 if "://" in text else 0
        cut = min((i for i in (text.find(mark, start) for mark in "/?#") if i >= 0), default=len(text))
        head, hidden = text[:cut], bool(text[cut:].strip("/?#"))
    return mask_passwords(head + (_HIDDEN if hidden else ""))


def scrubbed(text: str, *urls: str) -> str:
    """``text`` (an exception's message) with each of ``urls`` in it shown as :func:`shown_url` shows it, and their
    paths and queries left out wherever else they appear, then :func:`~iii._cli.mask_passwords` over the rest.

    Example:
        >>> scrubbed("400, message='Bad', url='https://h/services/T/B/S?x=1'", "https://h/services/T/B/S?x=1")
        "400, message='Bad', url='https://h/…'"
    """
    for url in sorted(urls, key=len, reverse=True):
        text = text.replace(url, shown_url(url))
        try:
            parts = urlsplit(url)
        except ValueError:
            continue
        tail = parts.path + (f"?{parts.query}" if parts.query else "")
        if tail.strip("/"):
            text = text.replace(tail, _HIDDEN)
    return mask_passwords(text)


def post_url(url: str, subject: str = "") -> SplitResult:
    """``url``'s parts when a request can be posted to it: an ``http://`` or ``https://`` URL with a host that is an
    IP address or a valid host name; else a :class:`ValueError` starting with ``subject`` (what the URL is, for the
    message), the URL shown as :func:`shown_url` shows it. The alert webhooks' and the OTLP endpoint's one check.

    Example:
        >>> post_url("https://hooks.example.com/alert").hostname
        'hooks.example.com'
        >>> post_url("ftp://u:s3cret@files.example.com/SECRET", "the 'url' ")
        Traceback (most recent call last):
        ...
        ValueError: the 'url' must be an http:// or https:// URL with a host, got 'ftp://u:***@files.example.com/…'
    """
    shown = repr(shown_url(url))
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number 0..65535
    except ValueError as exc:
        raise ValueError(f"{subject}{'is ' if subject else ''}not a URL: {shown} ({scrubbed(str(exc), url)})") \
            from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{subject}must be an http:// or https:// URL with a host, got {shown}")
    problem = host_problem(parts.hostname)
    if problem:
        # aiohttp took http://hooks..example.com: each request raised UnicodeError, not a connection error
        raise ValueError(f"{subject}has a host no request can be sent to ({problem}): {shown}")
    return parts


def host_problem(host: str) -> str | None:
    """What makes ``host`` (a URL's host, as :func:`urllib.parse.urlsplit` gives it) one no request can be sent
    to, else ``None``: aiohttp took ``collector..example.com`` and each request to it raised ``UnicodeError``
    from the IDNA encoding, not a connection error.

    Example:
        >>> host_problem("hooks.example.com"), host_problem("::1"), host_problem("example.com.")
        (None, None, None)
        >>> host_problem("..."), host_problem("a" * 64 + ".example.com")
        ('an empty label', 'a label over 63 characters')
    """
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if not host or any(c.isspace() or ord(c) < 32 for c in host):
        return "blanks or control characters" if host else "no host"
    name = host[:-1] if host.endswith(".") else host  # a fully qualified name's final dot is allowed
    labels = name.split(".")
    if any(not label for label in labels):
        return "an empty label"
    if any(len(label) > 63 for label in labels):
        return "a label over 63 characters"
    try:
        encoded = name.encode("idna")
    except UnicodeError as exc:
        return f"a name IDNA cannot encode ({exc})"
    if len(encoded) > 253:
        return "a name over 253 characters"
    try:
        import yarl  # aiohttp's URL type: what it refuses, no request can be sent to
    except ImportError:  # pragma: no cover - comes with aiohttp, an optional extra
        return None
    try:
        yarl.URL.build(scheme="http", host=host)
    except (ValueError, TypeError) as exc:
        return f"a host aiohttp refuses ({exc})"
    return None
