"""The chaos suite (issue #8): malformed frames, broken channels, racing increments, a killed queue engine and
hostile HTTP clients, each measured against a target.

Run: ``.venv/bin/python -m bench.chaos [--quick] [--only fuzz,channels,increments,queue,rest] [--json]``.
"""

from __future__ import annotations

import asyncio
import importlib
import tempfile
import time
import traceback
from pathlib import Path

from .common import Figure, Report

SCENARIOS = ("fuzz", "channels", "increments", "queue", "rest")

__all__ = ["SCENARIOS", "Figure", "Report", "run_scenario"]


async def run_scenario(name: str, quick: bool, workdir: Path | None = None) -> Report:
    """Run one scenario by name; an exception inside it becomes a failed ``scenario completed`` figure."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown chaos scenario {name!r} (choose from {', '.join(SCENARIOS)})")
    module = importlib.import_module(f"{__name__}.{name}_scenario")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"iii-chaos-{name}-") as tmp:
        try:
            report: Report = await module.run(quick, workdir or Path(tmp))
        except Exception as exc:  # the run itself broke: that is a failed target, with the reason
            report = Report(name)
            report.check("scenario completed", "no", False, "yes",
                         detail=f"{type(exc).__name__}: {exc}"[:300] + " | " + traceback.format_exc(limit=3)[-300:])
    report.info("duration", round(time.monotonic() - started, 1), "s")
    return report


def run_sync(name: str, quick: bool) -> Report:
    """:func:`run_scenario` from synchronous code."""
    return asyncio.run(run_scenario(name, quick))
