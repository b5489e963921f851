"""A configuration file that is huge, self-referencing, deeply nested, not UTF-8 or has non-string keys is refused
with one ConfigError line, quickly; never a RecursionError, a TypeError, a multi-line message or an endless read."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from iii_engine.config import MAX_CONFIG_BYTES, load_config, parse_config
from iii_engine.modules.http.settings import ApiSettings
from iii_engine.settings import ConfigError


def _refused(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, env={})
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_self_referencing_alias_is_refused() -> None:
    # before: RecursionError out of expand_env
    assert "refers to itself" in _refused("port: 1\nloop: &a [1, *a]\n")


def test_aliases_that_multiply_are_refused_quickly() -> None:
    # six levels of ten aliases each name a million values; before, every one was expanded (~30 s per million,
    # ten times more per level)
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]
    started = time.monotonic()
    assert "values" in _refused("\n".join(lines))
    assert time.monotonic() - started < 5


def test_deep_nesting_is_refused() -> None:
    # before: RecursionError out of the YAML parser
    assert "nested deeper" in _refused("port: 1\nx: " + "[" * 3000 + "]" * 3000 + "\n")
    assert "nested deeper" in _refused("port: 1\nx: " + "[" * 100 + "]" * 100 + "\n")


@pytest.mark.parametrize("text, path", [
    ("1: 2\nport: 3\n", ""),
    ("channels: {3: 1}\n", "channels"),
    ("modules:\n  - class: modules::api::RestApiModule\n    config: {cors: {7: x}}\n", "modules[0].config.cors"),
])
def test_a_key_that_is_not_a_string_is_named(text: str, path: str) -> None:
    # before: TypeError: keywords must be strings
    message = _refused(text)
    assert message.startswith(f"{path}: " if path else "key ") and "is not a string" in message


def test_a_module_settings_key_that_is_not_a_string_names_its_path() -> None:
    with pytest.raises(ConfigError, match=r"^modules\[2\]\.config\.cors: key 1 is not a string$"):
        ApiSettings.parse({"cors": {1: "x"}}, at="modules[2].config")


def test_invalid_yaml_is_one_line() -> None:
    # before: PyYAML's message, with its marks on lines of their own
    message = _refused("port: [1\n")
    assert message.startswith("invalid YAML in the configuration, line 2, column 1: ") and "line 1, column 7" in message
    assert "\n" not in message and "<unicode string>" not in message


def test_invalid_yaml_in_a_file_names_the_file(tmp_path: Path) -> None:
    # before: 'invalid YAML: while parsing a flow sequence in "<unicode string>", ...' (no file named)
    path = tmp_path / "engine.yaml"
    path.write_text("port: 1\nmodules: [\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert str(refused.value).startswith(f"invalid YAML in configuration file {path}, line 3, column 1: ")


def test_a_file_larger_than_the_limit_is_refused_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"port: 1\n" + b"# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match="larger than"):
        load_config(path)
    path.write_bytes(b"port: 1\n" + b"# padding\n" * (MAX_CONFIG_BYTES // 20))
    assert load_config(path).port == 1


def test_an_endless_file_is_not_read_whole() -> None:
    with pytest.raises(ConfigError, match="larger than"):
        load_config("/dev/zero")


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("host: caf\xe9\n".encode("latin-1"))
    # before: UnicodeDecodeError
    with pytest.raises(ConfigError, match=r"is not UTF-8 text: invalid continuation byte at byte 9"):
        load_config(path)
