"""The observability module's OTLP endpoint is checked when something is exported to it."""

from __future__ import annotations

import pytest

from iii_engine.modules.observability.settings import ObservabilitySettings
from iii_engine.settings import ConfigError


@pytest.mark.parametrize(("endpoint", "said"), [
    ("localhost:4317", "must be an http:// or https:// URL with a host"),
    ("collector", "must be an http:// or https:// URL with a host"),
    ("http://otel:99999", "Port out of range"),
    ("http://[::1", "not a URL"),
])
@pytest.mark.parametrize("config", [{"enabled": True, "exporter": "otlp"}, {"logs_exporter": "both"}])
def test_an_endpoint_that_is_not_a_url_is_refused_by_name(endpoint: str, said: str, config: dict[str, object]) -> None:
    # Before: accepted, and then every export failed, one warning per payload, for the engine's whole life.
    with pytest.raises(ConfigError, match=f"^endpoint: .*{said}"):
        ObservabilitySettings.from_config({**config, "endpoint": endpoint}, env={})


def test_an_unused_or_good_endpoint_is_accepted() -> None:
    unused = ObservabilitySettings.from_config({"enabled": True, "exporter": "memory", "endpoint": "junk"}, env={})
    assert unused.endpoint == "junk"
    good = ObservabilitySettings.from_config({"enabled": True, "exporter": "both",
                                              "endpoint": "https://otel.example:4318/v1/traces"}, env={})
    assert good.endpoint == "https://otel.example:4318/v1/traces"
