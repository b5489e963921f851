"""A host name the resolver does not know is named as the resolver says ("Name or service not known"), in the
waiting line and in the final ``ConnectionError`` alike; the final one said "last error: Unknown error -2"
(``os.strerror`` of the resolver's own negative code)."""

from __future__ import annotations

import socket

import pytest

from iii import InitOptions, ReconnectionConfig, register_worker

pytestmark = pytest.mark.timeout(30)


def test_the_final_error_names_the_resolvers_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown(*_: object, **__: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)  # the same answer on any machine, with or without DNS
    options = InitOptions(reconnection_config=ReconnectionConfig(initial_delay_ms=10, max_delay_ms=20,
                                                                 jitter_factor=0.0, max_retries=2))
    with pytest.raises(ConnectionError) as failure:
        register_worker("ws://localhst:49134", options)
    assert "last error: Name or service not known" in str(failure.value), str(failure.value)
    assert "Unknown error" not in str(failure.value)
