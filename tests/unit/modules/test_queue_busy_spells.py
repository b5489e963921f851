"""Busy spells of the queue module (:class:`BusyFunctions`): how long a job its worker refused for being busy is put
off, and when a refusal becomes a failed attempt. Found by an attack on the first version: a spell whose refused job
was settled otherwise (run on another engine or subscriber, skipped by its condition) stayed open, so one refusal
past the grace, however much later, was a failed attempt; and a spell refused most recently was forgotten first at
the cap, starting anew for ever."""

from __future__ import annotations

from iii_engine.modules.queue.module import BusyFunctions
from iii_engine.modules.queue.settings import QueueSettings

SETTINGS = QueueSettings(backoff_ms=0, missing_function_grace_ms=2_000, poll_interval_ms=20)


def test_a_refusal_after_a_quiet_while_begins_a_new_spell() -> None:
    busy = BusyFunctions()
    assert busy.put_off("q", "f", SETTINGS, now=0) is not None
    # the job went elsewhere; one refusal 3.3 s later, past the 2 s grace: put off (before: a failed attempt)
    assert busy.put_off("q", "f", SETTINGS, now=3_300) is not None


def test_refusals_without_progress_past_the_grace_are_failed_attempts() -> None:
    busy = BusyFunctions()
    outcomes = [busy.put_off("q", "f", SETTINGS, now=ms) for ms in range(0, 2_600, 100)]
    assert all(delay is not None for delay in outcomes[:20]) and outcomes[-1] is None


def test_progress_keeps_a_long_spell_within_the_grace() -> None:
    busy = BusyFunctions()
    outcomes = [busy.put_off("q", "f", SETTINGS, now=ms, progress=True) for ms in range(0, 6_000, 100)]
    assert None not in outcomes


def test_at_the_cap_the_spell_refused_longest_ago_is_forgotten() -> None:
    busy = BusyFunctions(limit=2)
    busy.put_off("q", "stuck", SETTINGS, now=0)
    busy.put_off("q", "a", SETTINGS, now=50)
    busy.put_off("q", "stuck", SETTINGS, now=100)  # refused again: now the most recent
    busy.put_off("q", "b", SETTINGS, now=150)  # over the cap: "a" goes, not "stuck"
    outcomes = [busy.put_off("q", "stuck", SETTINGS, now=ms) for ms in range(200, 2_200, 100)]
    assert outcomes[-1] is None  # its spell went on from 0: past the grace (before: restarted at 100 ms)
