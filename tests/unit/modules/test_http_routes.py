"""Route table, ``http`` trigger configs, REST API settings and CORS headers (no sockets needed)."""

from __future__ import annotations

import pytest

from iii_engine.modules.base import EngineError
from iii_engine.modules.http.api import result_response
from iii_engine.modules.http.routes import RouteTable, parse_http_trigger
from iii_engine.modules.http.settings import ApiSettings, CorsSettings
from iii_engine.settings import ConfigError


def table(*routes: tuple[str, str, str]) -> RouteTable:
    out = RouteTable()
    for n, (function_id, path, method) in enumerate(routes):
        out.add(parse_http_trigger(f"t{n}", function_id, {"api_path": path, "http_method": method}))
    return out


def test_route_key_strips_one_leading_slash_and_upper_cases_the_method() -> None:
    route = parse_http_trigger("t", "f", {"api_path": "/a/:b", "http_method": "post", "description": "x"})
    assert (route.key, route.registered_path, route.method) == ("POSTa/:b", "/a/:b", "POST")


@pytest.mark.parametrize("config, fragment", [
    (None, "config must be an object"),
    ({}, "api_path must be a non-empty string"),
    ({"api_path": "/"}, "api_path must be a non-empty string"),
    ({"api_path": "x", "http_method": "TRACE"}, "http_method 'TRACE'"),
    ({"api_path": "x", "condition_function_id": 3}, "condition_function_id must be a string"),
])
def test_bad_trigger_configs_are_rejected_with_the_reason(config: object, fragment: str) -> None:
    with pytest.raises(EngineError) as info:
        parse_http_trigger("t9", "f", config)
    assert info.value.code == "invalid_trigger_config"
    assert fragment in info.value.message and "t9" in info.value.message


def test_path_params_are_decoded_and_must_be_non_empty() -> None:
    routes = table(("f", "users/:user/files/:name", "GET"))
    match = routes.match("get", "/users/ann/files/a%20b.txt")
    assert match is not None and match.path_params == {"user": "ann", "name": "a b.txt"}
    assert routes.match("GET", "/users//files/x") is None
    assert routes.match("GET", "/users/ann/files") is None


def test_static_segments_win_regardless_of_registration_order() -> None:
    routes = table(("param", "items/:id", "GET"), ("static", "items/new", "GET"), ("deep", ":a/new", "GET"))
    assert routes.match("GET", "/items/new").route.function_id == "static"  # type: ignore[union-attr]
    assert routes.match("GET", "/items/7").route.function_id == "param"  # type: ignore[union-attr]
    assert routes.match("GET", "/other/new").route.function_id == "deep"  # type: ignore[union-attr]


def test_replace_and_remove_by_trigger_id() -> None:
    routes = RouteTable()
    routes.add(parse_http_trigger("a", "one", {"api_path": "x"}))
    replaced = routes.add(parse_http_trigger("b", "two", {"api_path": "/x"}))
    assert replaced is not None and replaced.function_id == "one"
    assert routes.match("GET", "/x").route.function_id == "two"  # type: ignore[union-attr]
    removed = routes.remove("a")  # kept, not serving: dropped, and the route stays b's
    assert removed is not None and removed.function_id == "one"
    assert routes.match("GET", "/x").route.function_id == "two"  # type: ignore[union-attr]
    assert routes.remove("b") is not None and routes.match("GET", "/x") is None and len(routes) == 0
    assert routes.remove("b") is None


def test_a_replaced_route_serves_again_once_its_replacement_goes() -> None:
    routes = RouteTable()
    routes.add(parse_http_trigger("a", "one", {"api_path": "x", "http_method": "POST"}))
    routes.add(parse_http_trigger("b", "two", {"api_path": "x", "http_method": "POST"}))
    routes.add(parse_http_trigger("c", "three", {"api_path": "x", "http_method": "POST"}))
    routes.remove("c")
    # before: None (a's route gone for good, its trigger still registered)
    assert routes.match("POST", "/x").route.function_id == "two"  # type: ignore[union-attr]
    routes.remove("b")
    assert routes.match("POST", "/x").route.function_id == "one"  # type: ignore[union-attr]
    assert len(routes) == 1


def test_a_trigger_registered_again_keeps_one_route() -> None:
    routes = RouteTable()
    routes.add(parse_http_trigger("a", "one", {"api_path": "x"}))
    routes.add(parse_http_trigger("b", "two", {"api_path": "x"}))
    # a again, under another method: its GET route goes (b serves GET x), and only its POST route is left
    assert routes.add(parse_http_trigger("a", "one", {"api_path": "x", "http_method": "POST"})) is None
    assert routes.match("GET", "/x").route.function_id == "two"  # type: ignore[union-attr]
    assert routes.match("POST", "/x").route.function_id == "one"  # type: ignore[union-attr]
    routes.remove("b")
    assert routes.match("GET", "/x") is None and len(routes) == 1
    # b again on the same key as before: on top again, nothing kept twice
    routes.add(parse_http_trigger("b", "two", {"api_path": "x", "http_method": "POST"}))
    routes.add(parse_http_trigger("b", "two", {"api_path": "x", "http_method": "POST"}))
    routes.remove("b")
    assert routes.match("POST", "/x").route.function_id == "one"  # type: ignore[union-attr]


def test_settings_defaults_and_validation() -> None:
    default = ApiSettings.parse(None)
    assert (default.port, default.default_timeout_ms, default.concurrency_request_limit) == (3111, 30000, 1024)
    assert default.cors == CorsSettings(allowed_origins=None, allowed_methods=None)
    with pytest.raises(ConfigError, match=r"^default_timeout: must be >= 1, got 0$"):
        ApiSettings.parse({"default_timeout": 0})
    with pytest.raises(ConfigError, match=r"^cors: unknown key 'origins' \(allowed: allowed_methods, allowed_orig"):
        ApiSettings.parse({"cors": {"origins": []}})
    with pytest.raises(ConfigError, match=r"^cors\.allowed_methods: must be a list, got 'GET'$"):
        ApiSettings.parse({"cors": {"allowed_methods": "GET"}})
    with pytest.raises(ConfigError, match=r"^cors\.allowed_methods\[1\]: must be a string, got 7$"):
        ApiSettings.parse({"cors": {"allowed_methods": ["GET", 7]}})
    assert ApiSettings.parse({"cors": {"allowed_methods": ["get"]}}).cors.allowed_methods == ("GET",)


def test_cors_headers() -> None:
    strict = CorsSettings(allowed_origins=("https://a.example",), allowed_methods=("GET", "POST"))
    assert strict.headers(None, False, None) == {}
    assert strict.headers("https://b.example", True, None) == {}
    pre = strict.headers("https://a.example", True, "x-token")
    assert pre["Access-Control-Allow-Origin"] == "https://a.example"
    assert pre["Access-Control-Allow-Methods"] == "GET, POST"
    assert pre["Access-Control-Allow-Headers"] == "x-token"
    assert strict.allows_method("post") and not strict.allows_method("DELETE")
    assert CorsSettings().allows_method("DELETE")


@pytest.mark.parametrize("result, status, body", [
    ({"status_code": 201, "body": [1]}, 201, b"[1]"),
    ({"statusCode": 404}, 404, b"{}"),
    ({"status_code": 204, "statusCode": 500}, 204, b"{}"),
    ({"status_code": 99}, 502, b'{"error":"status_code 99 is not an HTTP status (an integer 100-599)"}'),
    ({"status_code": True}, 502, b'{"error":"status_code True is not an HTTP status (an integer 100-599)"}'),
    ("just a string", 200, b"{}"),
])
def test_result_response(result: object, status: int, body: bytes) -> None:
    response = result_response(result)
    assert (response.status, response.body) == (status, body)
    assert response.content_type == "application/json"


def test_paths_that_differ_in_parameter_names_only_are_one_route_the_latest_serving() -> None:
    table = RouteTable()
    table.add(parse_http_trigger("t1", "fn.id", {"api_path": "users/:id"}))
    replaced = table.add(parse_http_trigger("t2", "fn.uid", {"api_path": "users/:uid"}))
    # before: fn.uid was never served (fn.id came first in the scan) and add() said it replaced nothing
    assert replaced is not None and replaced.trigger_id == "t1"
    match = table.match("GET", "/users/7")
    assert match is not None and (match.route.function_id, match.path_params) == ("fn.uid", {"uid": "7"})
    assert len(table) == 1
    table.remove("t2")
    match = table.match("GET", "/users/7")
    assert match is not None and (match.route.function_id, match.path_params) == ("fn.id", {"id": "7"})
    # a lone ":" is a literal segment, another route
    table.add(parse_http_trigger("t3", "fn.colon", {"api_path": "users/:"}))
    assert len(table) == 2
    colon = table.match("GET", "/users/:")
    assert colon is not None and colon.route.function_id == "fn.colon"
