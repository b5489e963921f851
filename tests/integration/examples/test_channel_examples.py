"""The channel examples run as a user would run them (``python -m examples.<name>``), plus ``pipe_demo``."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from examples.channel_demo import MIB, generate, pipe_demo
from tests.conftest import ROOT, EngineProcess


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def run_example(module: str, *args: str) -> tuple[int, str, str]:
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": pythonpath}, cwd=ROOT)
    out, err = await asyncio.wait_for(proc.communicate(), 25)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.our_engine("the examples embed our engine")
@pytest.mark.parametrize(("module", "args", "expect"), [
    ("examples.file_transfer", ("--size-mb", "3"), "3,145,728 bytes stored as generated.bin"),
    ("examples.pipe_subprocess", ("--size-mb", "2"), "-> gzip -d -> 2,097,152 bytes"),
    ("examples.channel_demo", ("--size-mb", "5", "--no-progress"), "sent 5,242,880 bytes"),
])
async def test_example_with_embedded_engine(module: str, args: tuple[str, ...], expect: str) -> None:
    rc, out, err = await run_example(module, *args)
    assert rc == 0, err
    assert expect in out
    assert "verified" in out and "MISMATCH" not in out


async def test_example_against_an_engine_process(engine_process: Callable[..., Awaitable[EngineProcess]],
                                                 tmp_path: Path) -> None:
    engine = await engine_process()
    src = tmp_path / "mine.txt"
    src.write_bytes(b"line\n" * 100_000)
    rc, out, err = await run_example("examples.file_transfer", "--engine", engine.url, "--file", str(src))
    assert rc == 0, err
    assert "mine.txt: 500,000 bytes stored as mine.txt" in out and "verified" in out


async def test_pipe_demo_reports_a_verified_file(engine_url: str, tmp_path: Path) -> None:
    report = await pipe_demo(engine_url, 6, progress=False, out_dir=tmp_path)
    expected = hashlib.sha256(b"".join(generate(6 * MIB))).hexdigest()
    assert set(report) == {"bytes", "sha256", "seconds", "mb_per_s", "path"}
    assert report["bytes"] == 6 * MIB
    assert report["sha256"] == expected
    assert report["seconds"] > 0 and report["mb_per_s"] > 0
    path = Path(report["path"])
    assert path.parent == tmp_path
    assert file_sha256(path) == expected
    assert listing(tmp_path) == [path.name]  # no temporary file left


def test_generate_is_deterministic_and_chunks_differ() -> None:
    chunks = list(generate(3 * MIB + 1))
    assert [len(c) for c in chunks] == [MIB, MIB, MIB, 1]
    assert len(set(chunks[:3])) == 3
    assert b"".join(generate(3 * MIB + 1)) == b"".join(chunks)
