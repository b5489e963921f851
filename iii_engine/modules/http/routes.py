"""Route table of the REST API module: ``http`` trigger configs in, matched routes out (docs/guides/engine.md#modules).

A route key is the upper-case method plus the registered path without its leading slash, exactly as production
keys it. ``:name`` segments capture one path segment each. When several routes match a URL, the one with the
most literal segments (counted from the left) wins, so ``items/special`` beats ``items/:id`` whatever the order
of registration.

Example:
    >>> table = RouteTable()
    >>> _ = table.add(parse_http_trigger("t1", "fn.item", {"api_path": "/items/:id", "http_method": "get"}))
    >>> match = table.match("GET", "/items/42")
    >>> match.route.function_id, match.path_params
    ('fn.item', {'id': '42'})
    >>> table.match("POST", "/items/42") is None
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from ..base import EngineError

HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class Route:
    """One active ``http`` trigger."""

    trigger_id: str
    function_id: str
    method: str
    api_path: str  # as registered (leading slash removed): what the handler sees as ``path``
    segments: tuple[str, ...]
    condition_function_id: str | None = None
    registered_path: str = ""  # the api_path string exactly as the trigger gave it


    @property
    def key(self) -> str:
        """Production's route key: ``METHOD`` + path without the leading slash."""
        return f"{self.method}{self.api_path}"

    @property
    def urls(self) -> tuple[str, tuple[str | None, ...]]:
        """What tells the requests it matches: its method and its segments, a parameter's name left out (``None``):
        ``users/:id`` and ``users/:uid`` match the same URLs.

        Example:
            >>> parse_http_trigger("t", "f", {"api_path": "users/:id/:"}).urls
            ('GET', ('users', None, ':'))
        """
        return self.method, tuple(None if _is_param(segment) else segment for segment in self.segments)


@dataclass(slots=True)
class RouteMatch:
    """A route together with the path parameters taken from the URL.

    Not frozen: a frozen dataclass's ``__init__`` (``object.__setattr__`` per field) cost twice a plain one's. A
    route without parameters is matched by one match made ahead and shared by its requests (its ``path_params``
    is empty, and nobody must change it: take a copy to hand on).
    """

    route: Route
    path_params: dict[str, str]


def parse_http_trigger(trigger_id: str, function_id: str, config: Any) -> Route:
    """Validate an ``http`` trigger config; :class:`EngineError` ``invalid_trigger_config`` names what is wrong.

    Example:
        >>> parse_http_trigger("t", "f", {"api_path": "a/:b"}).method
        'GET'
        >>> parse_http_trigger("t", "f", {"api_path": "a", "http_method": "BREW"})
        Traceback (most recent call last):
        ...
        iii_engine.modules.base.EngineError: invalid_trigger_config: http trigger t: http_method 'BREW' is not \
one of GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS
    """
    if not isinstance(config, Mapping):
        raise EngineError("invalid_trigger_config", f"http trigger {trigger_id}: config must be an object")
    api_path = config.get("api_path")
    if not isinstance(api_path, str) or not api_path.strip("/"):
        raise EngineError("invalid_trigger_config",
                          f"http trigger {trigger_id}: api_path must be a non-empty string, got {api_path!r}")
    method = config.get("http_method") or "GET"
    if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
        raise EngineError("invalid_trigger_config",
                          f"http trigger {trigger_id}: http_method {method!r} is not one of {', '.join(HTTP_METHODS)}")
    condition = config.get("condition_function_id")
    if condition is not None and not isinstance(condition, str):
        raise EngineError("invalid_trigger_config",
                          f"http trigger {trigger_id}: condition_function_id must be a string")
    path = api_path[1:] if api_path.startswith("/") else api_path
    return Route(trigger_id, function_id, method.upper(), path, tuple(path.split("/")), condition or None,
                 api_path)


def _is_param(segment: str) -> bool:
    """Whether a route segment captures (``:name``); a lone ``:`` is a literal."""
    return segment.startswith(":") and len(segment) > 1


class BadPath(ValueError):
    """A request path whose percent-escapes do not decode to UTF-8 text."""


def _split(url_path: str) -> list[str]:
    path = url_path[1:] if url_path.startswith("/") else url_path
    try:
        # strict: the default replaces undecodable bytes with U+FFFD, so /items/%FF and /items/%FE would both
        # reach the handler as the same id
        return [unquote(part, errors="strict") for part in path.split("/")]
    except UnicodeDecodeError as exc:
        raise BadPath(f"request path {url_path[:200]!r} is not UTF-8 once percent-decoded ({exc.reason})") from None


class RouteTable:
    """Active routes by key, with lookups by method and URL path.

    Several triggers may ask for one route (two workers serving ``POST orders``, or routes whose paths differ only in
    their parameters' names, which match the same URLs: :attr:`Route.urls`): the latest serves it, and the others are
    kept in the order they came, so that the route goes back to the one before when the latest leaves (its
    unregister, or its worker's disconnect). Before, the first worker's route was gone for good while it stayed
    connected, its trigger still listed; and of ``users/:id`` and ``users/:uid`` the second was never served, and
    nothing said so.

    Example:
        >>> table = RouteTable()
        >>> _ = table.add(parse_http_trigger("a", "fn.a", {"api_path": "orders", "http_method": "POST"}))
        >>> table.add(parse_http_trigger("b", "fn.b", {"api_path": "orders", "http_method": "POST"})).function_id
        'fn.a'
        >>> table.match("POST", "/orders").route.function_id
        'fn.b'
        >>> _ = table.remove("b")
        >>> table.match("POST", "/orders").route.function_id
        'fn.a'
    """

    def __init__(self) -> None:
        # every route asked for, by the URLs it matches, in the order they came: the last one serves
        self._by_key: dict[tuple[str, tuple[str | None, ...]], list[Route]] = {}
        self._key_of: dict[str, tuple[str, tuple[str | None, ...]]] = {}  # trigger id -> its route's URLs
        self._by_method: dict[str, list[Route]] = {}
        # Routes without parameters by method and exact path: such a route beats every parameterised sibling, so
        # a URL that names one needs no scan (nor per-segment unquoting: only a URL without escapes is looked up).
        # Each is held as its match, made once (one object less per request).
        self._static: dict[str, dict[str, RouteMatch]] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def add(self, route: Route) -> Route | None:
        """Install ``route`` (replacing its trigger's earlier route, if any); the route it now serves in place of,
        which is kept and serves again once ``route`` is removed, is returned."""
        earlier = self._drop(route.trigger_id)
        urls = route.urls
        stack = self._by_key.setdefault(urls, [])
        previous = stack[-1] if stack else None
        stack.append(route)
        self._key_of[route.trigger_id] = urls
        self._rebuild(route.method)
        if earlier is not None and earlier.method != route.method:
            self._rebuild(earlier.method)
        return previous

    def remove(self, trigger_id: str) -> Route | None:
        """Remove the route installed by ``trigger_id``; if it was serving, the one before it under the same key
        serves again."""
        route = self._drop(trigger_id)
        if route is not None:
            self._rebuild(route.method)
        return route

    def _drop(self, trigger_id: str) -> Route | None:
        key = self._key_of.pop(trigger_id, None)
        if key is None:
            return None
        stack = self._by_key[key]
        at = next(i for i, route in enumerate(stack) if route.trigger_id == trigger_id)
        route = stack.pop(at)
        if not stack:
            del self._by_key[key]
        return route

    def _rebuild(self, method: str) -> None:
        routes = [stack[-1] for stack in self._by_key.values() if stack[-1].method == method]
        # Literal segments first, left to right: a static route always wins over a parameterised sibling (a lone
        # ":" is a literal too: it sorted with the parameters, and users/:id took /users/: from users/:)
        routes.sort(key=lambda r: tuple(_is_param(seg) for seg in r.segments))
        self._by_method[method] = routes
        # Only routes that sort first (no segment starting with ":", not even a literal lone ":"), so that no
        # other route could have won the scan.
        self._static[method] = {r.api_path: RouteMatch(r, {}) for r in routes
                                if not any(seg.startswith(":") for seg in r.segments)}

    def match(self, method: str, url_path: str) -> RouteMatch | None:
        """The best route for ``method`` and the concrete ``url_path``, or ``None``; :class:`BadPath` when its
        escapes do not decode to UTF-8.

        Example:
            >>> table = RouteTable()
            >>> _ = table.add(parse_http_trigger("t", "f", {"api_path": "items/:id"}))
            >>> table.match("GET", "/items/caf%C3%A9").path_params
            {'id': 'café'}
            >>> table.match("GET", "/items/%FF")
            Traceback (most recent call last):
            ...
            iii_engine.modules.http.routes.BadPath: request path '/items/%FF' is not UTF-8 once percent-decoded \
(invalid start byte)
        """
        method = method.upper()
        if "%" not in url_path:
            static = self._static.get(method)
            if static:
                found = static.get(url_path[1:] if url_path.startswith("/") else url_path)
                if found is not None:
                    return found
        parts = _split(url_path)
        for route in self._by_method.get(method, ()):
            if len(route.segments) != len(parts):
                continue
            params: dict[str, str] = {}
            for pattern, part in zip(route.segments, parts, strict=True):
                if _is_param(pattern):
                    if not part:
                        break
                    params[pattern[1:]] = part
                elif pattern != part:
                    break
            else:
                return RouteMatch(route, params)
        return None

    def methods_for(self, url_path: str) -> list[str]:
        """Methods that have a route for ``url_path`` (used to answer CORS preflights)."""
        return [m for m in self._by_method if self.match(m, url_path) is not None]
