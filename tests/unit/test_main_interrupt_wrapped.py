"""A Ctrl-C during the console scripts' imports that lands in a class body's ``__set_name__`` reaches ``main`` as
``RuntimeError: Error calling __set_name__ ...`` caused by the ``KeyboardInterrupt`` (CPython wraps it): it is an
interrupt all the same, one death by SIGINT and no traceback (a clean-clone CI run printed one for ``iii-engine``:
the interrupt hit ``ipaddress``'s ``cached_property`` under ``urllib.parse``)."""

from __future__ import annotations

import importlib
from typing import Any, NoReturn

import pytest


def _interrupted_in_set_name() -> NoReturn:
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as interrupt:
        raise RuntimeError("Error calling __set_name__ on 'cached_property' instance 'hostmask'") from interrupt


@pytest.mark.parametrize("package", ["iii_engine", "iii_channels", "iii_streams"])
def test_an_interrupt_wrapped_by_set_name_is_an_interrupt(package: str, monkeypatch: pytest.MonkeyPatch) -> None:
    entry: Any = importlib.import_module(f"{package}.__main__")
    cli = importlib.import_module(f"{package}.cli")
    monkeypatch.setattr(cli, "main", _interrupted_in_set_name)
    monkeypatch.setattr(entry, "_interrupted", lambda: 130)
    assert entry.main() == 130


@pytest.mark.parametrize("package", ["iii_engine", "iii_channels", "iii_streams"])
def test_another_runtime_error_still_raises(package: str, monkeypatch: pytest.MonkeyPatch) -> None:
    entry: Any = importlib.import_module(f"{package}.__main__")
    cli = importlib.import_module(f"{package}.cli")

    def broken() -> NoReturn:
        raise RuntimeError("not an interrupt")

    monkeypatch.setattr(cli, "main", broken)
    with pytest.raises(RuntimeError, match="not an interrupt"):
        entry.main()
