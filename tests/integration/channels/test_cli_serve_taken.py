"""A second ``iii-channel serve`` of a function another worker serves refuses to start, in one line naming that
worker (its id and name, ``host:pid``), and the first one keeps its transfers; with ``--replace`` it takes the
function over and says from whom.

Before: the second serve registered the function too and the engine, which keeps the last registration of an id,
sent every later transfer to it: the first serve went on waiting, and only the engine's log said so.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from iii import III, InitOptions
from tests.integration.channels.test_cli import SERVING, _finish, _start

pytestmark = pytest.mark.timeout(30)

_FUNCTION = "files::taken"


async def _serving(engine_url: str, *args: str) -> tuple[asyncio.subprocess.Process, str]:
    """``iii-channel serve`` started, once it said it serves (or ended); with what it said."""
    proc = await _start("serve", "--function", _FUNCTION, "--engine", engine_url, "--no-progress", *args)
    assert proc.stderr is not None
    said = ""
    while SERVING not in said:
        line = (await asyncio.wait_for(proc.stderr.readline(), 15)).decode()
        if not line:
            break
        said += line
    return proc, said


@pytest.fixture
async def serves() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    started: list[asyncio.subprocess.Process] = []
    yield started
    for proc in started:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _send(engine_url: str, tmp_path: Path, name: str) -> None:
    source = tmp_path / name
    source.write_bytes(name.encode() * 1000)
    sent = await _finish(await _start("send", str(source), "--to", _FUNCTION, "--engine", engine_url,
                                      "--no-progress"))
    assert sent.rc == 0, sent.stderr


async def test_a_second_serve_refuses_unless_told_to_replace(engine_url: str, tmp_path: Path,
                                                             serves: list[asyncio.subprocess.Process]) -> None:
    first_out, third_out = tmp_path / "first", tmp_path / "third"
    first_out.mkdir()
    third_out.mkdir()
    first, said = await _serving(engine_url, "--out", str(first_out))
    serves.append(first)
    assert f"{SERVING}{_FUNCTION} on " in said, said

    proc, said = await _serving(engine_url, "--out", str(tmp_path))
    serves.append(proc)
    second = await _finish(proc, first=said)
    assert second.rc == 1, second.stderr
    assert re.fullmatch(rf"iii-channel: error: function {_FUNCTION} is served by worker \S+ \(\S+:{first.pid}\); "
                        r"stop it, or pass --replace to take it over\n", second.stderr), second.stderr
    await _send(engine_url, tmp_path, "a.bin")
    assert [p.name for p in first_out.iterdir()] == ["a.bin"]  # the first serve still gets the transfers

    third, said = await _serving(engine_url, "--out", str(third_out), "--replace")
    serves.append(third)
    assert re.fullmatch(rf"iii-channel: took {_FUNCTION} over from worker \S+ \(\S+:{first.pid}\)\n"
                        rf"{SERVING}{_FUNCTION} on \S+\n", said), said
    await _send(engine_url, tmp_path, "b.bin")
    assert [p.name for p in third_out.iterdir()] == ["b.bin"]
    assert [p.name for p in first_out.iterdir()] == ["a.bin"]


async def test_a_serve_whose_function_another_worker_takes_stops_with_one_line(
        engine_url: str, tmp_path: Path, serves: list[asyncio.subprocess.Process]) -> None:
    # Two serves started together can both pass the start's checks, and one coming back after the engine was away
    # registers again: the engine keeps the last registration and tells nobody. Before: the serve that lost its
    # function went on "serving", waiting for transfers that never came.
    first, said = await _serving(engine_url, "--out", str(tmp_path))
    serves.append(first)
    assert SERVING in said, said
    other = III(engine_url, InitOptions(otel={"enabled": False}))
    try:
        await other.connect_async()
        other.register_function(_FUNCTION, lambda data: data)  # any worker, without serve's check
        ended = await _finish(first, first=said)
    finally:
        await other.shutdown_async()
    assert ended.rc == 1, ended.stderr
    last = ended.stderr.splitlines()[-1]
    assert re.fullmatch(rf"iii-channel: error: function {_FUNCTION} is served by worker \S+ \(\S+\) now: it took "
                        r"the function over from this serve", last), ended.stderr


async def test_a_serve_starts_when_the_engine_cannot_list_its_workers(engine_url: str, tmp_path: Path,
                                                                      serves: list[asyncio.subprocess.Process]) -> None:
    # The check for another serve is a courtesy: before, an engine::workers::list that failed (or answered another
    # shape) ended serve with a traceback.
    broken = III(engine_url, InitOptions(otel={"enabled": False}))

    async def fails(_data: object) -> object:
        raise RuntimeError("workers list unavailable")

    try:
        await broken.connect_async()
        broken.register_function("engine::workers::list", fails)
        await broken.list_functions_async()  # the registration is in place
        proc, said = await _serving(engine_url, "--out", str(tmp_path))
        serves.append(proc)
    finally:
        await broken.shutdown_async()
    lines = said.splitlines()
    assert lines[0] == (f"iii-channel: could not check whether another worker serves {_FUNCTION} "
                        "(workers list unavailable); going on"), said
    assert lines[-1].startswith(f"{SERVING}{_FUNCTION} on "), said
    assert "Traceback" not in said


async def test_a_serve_waits_out_one_check_only_when_the_engine_never_lists_its_workers(
        engine_url: str, tmp_path: Path, serves: list[asyncio.subprocess.Process]) -> None:
    # Before: the check before registering and the one after each waited out the 5 s bound: "serving" after 10.3 s.
    silent = III(engine_url, InitOptions(otel={"enabled": False}))
    never = asyncio.Event()

    async def hangs(_data: object) -> object:
        await never.wait()
        return {}

    try:
        await silent.connect_async()
        silent.register_function("engine::workers::list", hangs)
        await silent.list_functions_async()
        start = asyncio.get_running_loop().time()
        proc, said = await _serving(engine_url, "--out", str(tmp_path))
        serves.append(proc)
        took = asyncio.get_running_loop().time() - start
    finally:
        await silent.shutdown_async()
    assert said.splitlines()[-1].startswith(f"{SERVING}{_FUNCTION} on "), said
    assert "could not check whether another worker serves" in said
    assert took < 9.5, took  # one 5 s bound and a process start under load; two bounds took 10.3 s


def test_the_help_names_replace(capsys: pytest.CaptureFixture[str]) -> None:
    from iii_channels.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    assert "--replace" in capsys.readouterr().out
