"""Numbers in an optional list of strings keep the text they were written as.

A list-of-strings field kept ``[1.10, 010]`` as ``("1.10", "010")``, but the same field declared optional
(``Names | None``, as ``cors.allowed_origins`` and ``cors.allowed_methods`` are) refused it: "must be a string,
got 1.1" (the list type sits inside an ``Annotated`` the union's arm was not unwrapped from).
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from iii_engine.config import parse_config
from iii_engine.modules.http.settings import CorsSettings
from iii_engine.settings import ConfigError, Names, Settings


class _Lists(Settings):
    label: ClassVar[str] = "lists"

    plain: Names = ()
    optional: Names | None = None


def _module_config(config: str) -> dict[str, Any]:
    cfg = parse_config(f"modules:\n  - class: x\n    config: {config}\n", env={})
    return (cfg.modules or [])[0].config


def test_an_optional_list_of_strings_keeps_numbers_as_written() -> None:
    raw = _module_config("{plain: [1.10, 010], optional: [1.10, 010, '${V:1.20}']}")
    lists = _Lists.parse(raw, at="lists")
    assert lists.plain == ("1.10", "010")
    assert lists.optional == ("1.10", "010", "1.20")


def test_an_optional_list_of_strings_still_takes_null_and_refuses_a_mapping_item() -> None:
    assert _Lists.parse(_module_config("{optional: null}")).optional is None
    with pytest.raises(ConfigError) as raised:
        _Lists.parse(_module_config("{optional: [a, {b: 1}]}"), at="lists")
    assert str(raised.value) == "lists.optional[1]: must be a string, got {'b': 1}"


def test_cors_methods_keep_numbers_as_written() -> None:
    raw = _module_config("{cors: {allowed_methods: [GET, 1.10, 010]}}")
    assert CorsSettings.parse(raw["cors"], at="cors").allowed_methods == ("GET", "1.10", "010")
