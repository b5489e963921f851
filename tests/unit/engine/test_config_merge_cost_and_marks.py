"""What YAML merges (``<<:``) cost to read, a merge written twice, and where a duplicate key is written.

A chain of merges (each mapping merging the one before, all listed in one merge) cost time and memory growing with
the cube of its length (16 KB: 3.6 s and 643 MB; 58 KB: MemoryError): every mapping's merged pairs were kept, each
with a rank as long as the chain. A second ``<<:`` in one mapping was dropped without a word, a duplicate key that is
an alias was reported at its anchor's line, and a flag word in a number field was shown as ``True``.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from iii_engine import config
from iii_engine.config import MAX_CONFIG_VALUES, parse_config
from iii_engine.settings import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def _chain(length: int) -> str:
    """``length`` mappings, each merging the one before, all merged by ``x``."""
    items = ["&m0 {k0: 1}"] + [f"&m{i} {{<<: *m{i - 1}, k{i}: 1}}" for i in range(1, length)]
    return "x:\n  <<: [" + ", ".join(items) + "]\n"


def _objects_constructed(text: str, monkeypatch: pytest.MonkeyPatch) -> int:
    calls = [0]
    construct = config._Loader.construct_object

    def counted(self: Any, node: Any, deep: bool = False) -> Any:
        calls[0] += 1
        return construct(self, node, deep=deep)

    monkeypatch.setattr(config._Loader, "construct_object", counted)
    parse_config(text, env={})
    return calls[0]


def test_a_chain_of_merges_costs_work_linear_in_its_length(monkeypatch: pytest.MonkeyPatch) -> None:
    # before: each mapping of the chain kept all the pairs it merged, and the top one read them all again (about
    # 160,000 objects looked up for 400 mappings)
    assert _objects_constructed(_chain(400), monkeypatch) < 10 * 400


def test_a_long_chain_of_merges_reads_in_bounded_memory_and_time() -> None:
    # before: MemoryError (2.9 GB reached at 2,000 mappings, 58 KB); now well under a second of merging
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit != resource.RLIM_INFINITY and limit < 1 << 30:
        pytest.skip("the address space is already limited below 1 GiB")
    script = textwrap.dedent("""
        import resource, sys, time
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from iii_engine.config import parse_config
        text = sys.stdin.read()
        started = time.monotonic()
        parse_config(text, env={})
        print(f"{time.monotonic() - started:.2f}")
    """)
    done = subprocess.run([sys.executable, "-c", script], input=_chain(2000), capture_output=True, text=True,
                          timeout=25, cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, check=False)
    assert done.returncode == 0, done.stderr[-600:]
    assert float(done.stdout) < 10


def test_merges_that_read_more_than_the_value_bound_are_refused_in_one_line() -> None:
    # each of 300 mappings merges a chain of 400 that gives one key: few values, but 300 x 400 mappings read
    items = ["&m0 {k: 1}"] + [f"&m{i} {{<<: *m{i - 1}}}" for i in range(1, 400)]
    text = "chain: {<<: [" + ", ".join(items) + "]}\n" + "".join(f"u{i}: {{<<: *m399}}\n" for i in range(300))
    with pytest.raises(ConfigError) as refused:
        parse_config(text, env={})
    assert str(refused.value) == (f"the configuration has more than {MAX_CONFIG_VALUES} values (counting every "
                                  f"value a YAML alias or merge repeats)")


def test_a_merge_reaching_the_mapping_it_is_in_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^invalid YAML in the configuration, line 1, column 4: found a merge "
                                          r"\(<<\) that reaches the mapping it is in"):
        parse_config("a: &a {x: 1, b: {<<: *a}, <<: *a}\n", env={})


def test_merges_read_depth_first_the_first_mapping_and_what_it_merges_before_the_next() -> None:
    # YAML's merge (as PyYAML flattens it): own keys, then the first merged mapping with its own merges, then the next
    text = ("d: &d {'${K:max_open}': 1, max_open_per_worker: 1}\nb: &b {<<: *d, max_open_per_worker: 2}\n"
            "c: &c {max_open: 3, max_open_per_worker: 3, attach_timeout_ms: 3}\nchannels: {<<: [*b, *c]}\n")
    channels = parse_config(text, env={}).channels
    assert (channels.max_open, channels.max_open_per_worker, channels.attach_timeout_ms) == (1, 2, 3)


@pytest.mark.parametrize(("text", "message"), [
    ("<<: {port: 5}\n<<: {port: 6}\n",
     "invalid YAML in the configuration, line 2, column 1: key '<<' is given twice in one mapping (lines 1 and 2); "
     "keep one"),
    ("a: &a {port: 1}\nb: &b {host: h}\nc: {<<: *a, <<: *b}\n",
     "invalid YAML in the configuration, line 3, column 13: key '<<' is given twice in one mapping (line 3, columns "
     "5 and 13); keep one"),
])
def test_a_merge_written_twice_in_one_mapping_is_refused(text: str, message: str) -> None:
    # before: the second merge was dropped (port 5)
    with pytest.raises(ConfigError) as refused:
        parse_config(text, env={})
    assert str(refused.value) == message


def test_a_duplicate_key_that_is_an_alias_is_named_where_it_is_written() -> None:
    # before: "(lines 1 and 4)", the anchor's line
    with pytest.raises(ConfigError) as refused:
        parse_config("k: &k port\nx:\n  *k : 1\n  port: 2\n", env={})
    assert str(refused.value) == ("invalid YAML in the configuration, line 4, column 3: key 'port' is given twice in "
                                  "one mapping (lines 3 and 4); keep one")


@pytest.mark.parametrize(("text", "message"), [
    ("channels: {max_open: on}\n", "channels.max_open: must be an integer, got 'on'"),
    ("port: Off\n", "port: must be an integer, got 'Off'"),
    ("modules: yes\n", "modules: must be a list, got 'yes'"),
])
def test_a_flag_word_in_a_field_that_is_no_flag_is_shown_as_written(text: str, message: str) -> None:
    # before: "got True" / "got False"
    with pytest.raises(ConfigError) as refused:
        parse_config(text, env={})
    assert str(refused.value) == message
