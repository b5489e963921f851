"""``iii-engine logs --follow`` after a reconnect (re-attack mends): the catch-up reads back more than ``--limit``
and says when older entries may be missing, and what it keeps to print nothing twice is a digest per entry, not the
entry's body."""

from __future__ import annotations

import io
import sys
import threading
from typing import Any

import pytest

from iii_engine import inspect_cli
from iii_engine.inspect_cli import FOLLOW_CATCH_UP, _logs, _Printed, parse_args


def _entry(n: int) -> dict[str, Any]:
    return {"timestamp_unix_nano": n, "severity_number": 13, "severity_text": "WARN", "service_name": "s",
            "body": f"e{n}"}


class _Client:
    def register_function(self, *_: Any) -> None:
        pass

    def register_trigger(self, *_: Any) -> None:
        pass


class _FlappingEngine:
    """Connected, then lost once, then back; lists ``first`` entries before and ``after`` after the loss."""

    url = "ws://engine"

    def __init__(self, first: list[dict[str, Any]], after: list[dict[str, Any]], stop: threading.Event) -> None:
        self.client = _Client()
        self._answers = [first, after]
        self._states = iter([True, False, True])
        self._state = True
        self.stop = stop
        self.limits: list[int] = []

    @property
    def connected(self) -> bool:
        self._state = next(self._states, self._state)
        return self._state

    def renew(self) -> None:
        pass

    def call(self, function_id: str, payload: dict[str, Any]) -> Any:
        assert function_id == "engine::logs::list"
        self.limits.append(payload["limit"])
        entries = self._answers.pop(0)
        if not self._answers:
            self.stop.set()  # the catch-up read was the last thing to look at
        return {"logs": list(reversed(entries[-payload["limit"]:]))}  # newest first on the wire


def _follow(first: list[dict[str, Any]], after: list[dict[str, Any]],
            capsys: pytest.CaptureFixture[str]) -> tuple[list[int], str, str]:
    stop = threading.Event()
    engine = _FlappingEngine(first, after, stop)
    out = io.StringIO()
    assert _logs(engine, parse_args(["logs", "--follow", "--limit", "5"]), out, stop) == 0  # type: ignore[arg-type]
    return engine.limits, out.getvalue(), capsys.readouterr().err


def test_the_catch_up_reads_more_than_limit_and_says_when_older_entries_may_be_missing(
        capsys: pytest.CaptureFixture[str]) -> None:
    # Before: it read --limit (5) back: of 300 entries logged during a 4 s cut, 100 (the default) were printed and
    # the 200 others skipped without a word.
    during = [_entry(n) for n in range(10, 10 + FOLLOW_CATCH_UP + 50)]
    limits, out, err = _follow([_entry(n) for n in range(5)], during, capsys)
    assert limits == [5, FOLLOW_CATCH_UP]
    assert out.count("\n") == 5 + FOLLOW_CATCH_UP
    assert "none had been printed before: older ones logged while disconnected may be missing" in err


def test_a_catch_up_that_meets_what_was_printed_says_nothing_more(capsys: pytest.CaptureFixture[str]) -> None:
    first = [_entry(n) for n in range(5)]
    _, out, err = _follow(first, [*first, _entry(7)], capsys)
    assert out.count("\n") == 6 and "e7" in out
    assert "may be missing" not in err and "connected to ws://engine again" in err


def test_what_a_follower_keeps_of_a_printed_entry_is_a_digest() -> None:
    printed = _Printed()
    big = "x" * 1_000_000
    printed.add(big)
    assert big in printed and "y" not in printed
    assert sum(sys.getsizeof(key) for key in printed._keys) < 1000


def test_the_keys_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inspect_cli, "FOLLOW_SEEN", 3)
    printed = _Printed()
    for n in range(5):
        printed.add(str(n))
    assert "0" not in printed and "4" in printed and len(printed._keys) == 3
