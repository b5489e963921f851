"""CORS settings that could never work are refused at start with the value named: a method that is not a token
(it would go out in Access-Control-Allow-Methods), an origin no browser sends (a trailing slash, a path, a line
break)."""

from __future__ import annotations

import pytest

from iii_engine.modules.http.settings import ApiSettings
from iii_engine.settings import ConfigError


@pytest.mark.parametrize("cors, named", [
    ({"allowed_methods": ["GET", "BR EW"]}, "'BR EW' is not an HTTP method name"),
    ({"allowed_methods": ["GET\r\nX-Evil: 1"]}, "is not an HTTP method name"),
    ({"allowed_origins": ["https://app.example/"]}, "'https://app.example/' is not an origin"),
    ({"allowed_origins": ["https://app.example/login"]}, "is not an origin"),
    ({"allowed_origins": ["app.example"]}, "'app.example' is not an origin"),
    ({"allowed_origins": ["https://a.example\r\nx: y"]}, "is not an origin"),
])
def test_cors_values_that_could_never_work_are_refused(cors: dict[str, list[str]], named: str) -> None:
    # before: accepted; the method went out in preflight answers as is, the origin never matched any request
    with pytest.raises(ConfigError, match=r"^modules\[1\]\.config\.cors\.allowed_(methods|origins): ") as caught:
        ApiSettings.parse({"cors": cors}, at="modules[1].config")
    assert named in str(caught.value)


def test_usual_cors_values_are_kept() -> None:
    settings = ApiSettings.parse({"cors": {"allowed_origins": ["*", "null", "http://localhost:3000",
                                                               "https://app.example"],
                                           "allowed_methods": ["get", "PATCH", "*"]}})
    assert settings.cors.allowed_origins == ("*", "null", "http://localhost:3000", "https://app.example")
    assert settings.cors.allowed_methods == ("GET", "PATCH", "*")
