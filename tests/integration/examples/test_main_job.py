"""The README's main job (examples/demo.py) runs end to end and says so."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.our_engine("the main job embeds our engine")


async def test_main_job_runs_every_step() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "examples.demo", "--size-mb", "4", "--no-progress",
        cwd=str(ROOT), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 25)
    text = out.decode()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "alice -> bob::total            {'sum': 6, 'alice_says': 'hello bob'}" in text
    assert "function_not_found: Function nobody::home not found" in text
    assert "received and verified          4,194,304 bytes" in text
    assert "stream::get                    matches what was stored" in text
    assert "stream::list_groups            ['demo', 'totals']" in text
    assert text.rstrip().endswith("done: every step checked out")
