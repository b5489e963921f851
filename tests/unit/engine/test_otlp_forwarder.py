"""The OTLP forwarder's one-line error when aiohttp is not installed."""

from __future__ import annotations

import sys

import pytest

from iii_engine.modules.observability.exporter import OtlpForwarder


def test_missing_aiohttp_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # makes `import aiohttp` raise ImportError
    with pytest.raises(RuntimeError) as caught:
        OtlpForwarder("http://localhost:4318")
    assert str(caught.value) == ("exporting to an OTLP collector needs the package 'aiohttp': "
                                 "pip install 'iii-toolkit[http]'")
