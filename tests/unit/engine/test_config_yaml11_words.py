"""Plain ``on`` / ``yes`` / ``off`` / ``no`` and dates in string fields, and what a number's kept text costs.

YAML 1.1 (PyYAML) reads a plain ``on`` as true and ``2001-12-14`` as a date; YAML 1.2 (production's serde_yaml)
reads both as text. ``service_version: on`` became the version "True" (and a date or a flag word in any other
string field was refused: "must be a string, got True"). A string field now keeps the text as written; a flag
field still reads ``on`` as true, and a value written with a tag (``!!bool on``) is read as the tag says.

Each number written in the file kept its text in an attribute (an instance dictionary, about 260 bytes an integer
and 430 a float) even when the text is the number's own spelling; it is now kept only when it differs.
"""

from __future__ import annotations

import datetime
from typing import Any, ClassVar

import pytest

from iii_engine.config import parse_config
from iii_engine.modules.http.settings import CorsSettings
from iii_engine.modules.observability.settings import ObservabilitySettings
from iii_engine.settings import ConfigError, Names, Settings, YamlFloat, YamlInt


class _Fields(Settings):
    label: ClassVar[str] = "fields"

    name: str = ""
    flag: bool = False
    count: int = 0
    names: Names = ()


def _module_config(config: str) -> dict[str, Any]:
    cfg = parse_config(f"modules:\n  - class: x\n    config: {config}\n", env={})
    return (cfg.modules or [])[0].config


@pytest.mark.parametrize("word", ["on", "On", "ON", "off", "yes", "Yes", "no", "NO", "2001-12-14",
                                  "2001-12-14t21:59:43.10-05:00", "2001-12-14 21:59:43.10 -5"])
def test_a_string_field_keeps_a_yaml11_word_or_date_as_written(word: str) -> None:
    raw = _module_config(f"{{name: {word}, names: [GET, {word}]}}")
    fields = _Fields.parse(raw, at="fields")
    assert (fields.name, fields.names) == (word, ("GET", word))


@pytest.mark.parametrize("word", ["on", "yes", "2001-12-14"])
def test_the_service_version_keeps_the_word_as_written(word: str) -> None:
    raw = _module_config(f"{{service_version: {word}}}")
    assert ObservabilitySettings.from_config(raw, env={}).service_version == word
    assert ObservabilitySettings.parse(raw).service_version == word


@pytest.mark.parametrize(("word", "flag"), [("on", True), ("Yes", True), ("OFF", False), ("no", False),
                                            ("true", True), ("false", False)])
def test_a_flag_field_still_reads_the_word_as_yaml_11_does(word: str, flag: bool) -> None:
    assert _Fields.parse(_module_config(f"{{flag: {word}}}")).flag is flag
    assert parse_config(f"channels: {{production_mode: {word}}}", env={}).channels.production_mode is flag


def test_a_number_field_refuses_a_flag_word_naming_it_as_written() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config("channels: {max_open: on}", env={})
    assert str(raised.value) == "channels.max_open: must be an integer, got 'on'"


def test_a_tagged_or_quoted_word_is_read_as_written_there() -> None:
    raw = _module_config("{a: !!bool on, b: !!timestamp 2001-12-14, c: 'on', d: true}")
    assert raw["a"] is True
    assert type(raw["b"]) is datetime.date
    assert (raw["c"], raw["d"]) == ("on", True)


def test_a_flag_word_as_a_key_is_the_word() -> None:
    cors = _module_config("{cors: {on: 1}}")["cors"]
    assert list(cors) == ["on"]
    with pytest.raises(ConfigError, match=r"^cors: unknown key 'on' "):
        CorsSettings.parse(cors, at="cors")


def test_a_number_keeps_its_text_only_when_it_differs_from_its_own_spelling() -> None:
    values = _module_config("{n: [5, 0.5, 010, 1.10, 1.5e+3, -7]}")["n"]
    assert all(isinstance(value, YamlInt | YamlFloat) for value in values)
    assert [value.text for value in values] == ["5", "0.5", "010", "1.10", "1.5e+3", "-7"]
    # an attribute costs each instance a dictionary: none for the numbers written as Python spells them
    assert [bool(vars(value)) for value in values] == [False, False, True, True, True, False]
    assert _Fields.parse({"names": values}).names == ("5", "0.5", "010", "1.10", "1.5e+3", "-7")
