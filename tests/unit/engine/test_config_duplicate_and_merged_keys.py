"""Keys written twice, and keys a YAML merge (``<<:``) gives.

A key written twice in one mapping (``port: 1000`` then ``port: 2000``) silently gave the last value; production's
serde_yaml refuses the file ("duplicate entry with key"). A merged key that a ``${VAR}`` placeholder spells was
refused next to the mapping's own key of the same name, although YAML's merge lets the mapping's own key win (as it
does for the same key written without a placeholder).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from iii_engine.config import expand_env, load_config, parse_config
from iii_engine.settings import ConfigError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.mark.parametrize(("text", "message"), [
    ("port: 1000\nport: 2000\n",
     "invalid YAML in the configuration, line 2, column 1: key 'port' is given twice in one mapping (lines 1 and 2); "
     "keep one"),
    ("channels:\n  max_open: 3\n  attach_timeout_ms: 9\n  max_open: 4\n",
     "invalid YAML in the configuration, line 4, column 3: key 'max_open' is given twice in one mapping (lines 2 "
     "and 4); keep one"),
    ("channels: {max_open: 3, max_open: 4}\n",
     "invalid YAML in the configuration, line 1, column 25: key 'max_open' is given twice in one mapping (line 1, "
     "columns 12 and 25); keep one"),
    # inside a mapping that is merged elsewhere: still two keys written in one mapping
    ("base: &b {max_open: 3, max_open: 4}\nchannels: {<<: *b}\n",
     "invalid YAML in the configuration, line 1, column 24: key 'max_open' is given twice in one mapping (line 1, "
     "columns 11 and 24); keep one"),
])
def test_a_key_written_twice_in_one_mapping_is_refused_naming_it_and_both_lines(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(text, env={})
    assert str(raised.value) == message


def test_a_key_written_twice_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("modules:\n  - class: modules::queue::QueueModule\n    config: {}\n    config: {}\n")
    with pytest.raises(ConfigError, match=rf"^invalid YAML in configuration file {path}, line 4, column 5: key "
                                          r"'config' is given twice in one mapping \(lines 3 and 4\); keep one$"):
        load_config(path, env={})


def test_the_same_key_in_different_mappings_is_no_duplicate() -> None:
    cfg = parse_config("port: 1\nchannels: {max_open: 2}\nmodules:\n  - {class: a, config: {port: 3}}\n"
                       "  - {class: b, config: {port: 4}}\n", env={})
    assert cfg.port == 1
    assert [m.config["port"] for m in cfg.modules or []] == [3, 4]


@pytest.mark.parametrize("text", [
    "channels:\n  <<: {max_open: 5}\n  max_open: 10\n",
    "channels:\n  <<: {'${K:max_open}': 5}\n  max_open: 10\n",
    "channels:\n  <<: {max_open: 5}\n  ${K:max_open}: 10\n",
    "channels:\n  ${K:max_open}: 10\n  <<: {'${J:max_open}': 5}\n",
])
def test_a_key_the_mapping_writes_wins_over_a_merged_one_once_expanded_too(text: str) -> None:
    assert parse_config(text, env={}).channels.max_open == 10


def test_of_two_merged_mappings_the_first_wins_once_expanded_too() -> None:
    text = ("a: &a {'${K:max_open}': 7}\nb: &b {max_open: 8, max_open_per_worker: 9}\n"
            "channels:\n  <<: [*a, *b]\n")
    channels = parse_config(text, env={}).channels
    assert (channels.max_open, channels.max_open_per_worker) == (7, 9)


def test_a_mapping_merged_twice_keeps_its_own_merge() -> None:
    # PyYAML rewrote a merging mapping in place: merged a second time, it then read its merged keys as its own.
    text = ("a: &a {max_open: 1}\nb: &b {<<: *a, max_open: 2}\nc: {<<: *b}\nchannels: {<<: *b}\n")
    assert parse_config(text, env={}).channels.max_open == 2


@pytest.mark.parametrize(("text", "message"), [
    ("channels:\n  ${A:max_open}: 1\n  ${B:max_open}: 2\n",
     "channels: keys '${A:max_open}' and '${B:max_open}' are both 'max_open' once expanded"),
    ("channels:\n  <<: {'${A:max_open}': 1, max_open: 2}\n",
     "channels: keys '${A:max_open}' and 'max_open' are both 'max_open' once expanded"),
])
def test_two_keys_of_one_mapping_that_expand_alike_stay_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(text, env={})
    assert str(raised.value) == message


def test_a_plain_mapping_given_to_expand_env_still_refuses_keys_equal_once_expanded() -> None:
    with pytest.raises(ConfigError, match=r"keys '\$\{K:port\}' and 'port' are both 'port' once expanded"):
        expand_env({"${K:port}": 1, "port": 2}, env={})


def test_merges_past_the_value_bound_are_refused_while_read() -> None:
    keys = ", ".join(f"k{i}: 0" for i in range(1000))
    text = f"a: &a {{{keys}}}\n" + "".join(f"m{i}: {{<<: *a}}\n" for i in range(120))
    with pytest.raises(ConfigError, match="the configuration has more than 100000 values"):
        parse_config(text, env={})


@pytest.mark.parametrize("name", sorted(path.name for path in FIXTURES.glob("*.yaml")))
def test_the_fixture_configurations_still_load(name: str) -> None:
    assert load_config(FIXTURES / name, env={}).port > 0
