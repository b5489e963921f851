"""Where the reference SDK lives for interop tests, and how to run a script under it or under ours."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from tests.services import reference_python

__all__ = ["RefChild", "Script", "our_python", "reference_child", "reference_python", "run_scenario", "sdk_env",
           "stderr_tail", "telemetry_worker"]

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = Path(__file__).with_name("scenario.py")


def sdk_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["OTEL_ENABLED"] = "false"  # telemetry is not part of the frames we compare
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Script:
    """A scenario process; read its JSON step lines with :meth:`step`."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def step(self, wait_s: float = 15.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), wait_s)
            if not line:
                err = b""
                if self.proc.stderr is not None:
                    err = await self.proc.stderr.read()
                code = await self.proc.wait()
                raise AssertionError(f"scenario ended early (exit code {code}); its stderr ends:\n{stderr_tail(err)}")
            if line.startswith(b"{"):
                step: dict[str, Any] = json.loads(line)
                return step

    async def finish(self, wait_s: float = 15.0) -> int:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        return await asyncio.wait_for(self.proc.wait(), wait_s)


@asynccontextmanager
async def run_scenario(python: str, *args: str) -> AsyncIterator[Script]:
    proc = await asyncio.create_subprocess_exec(
        python, str(SCENARIO), *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=sdk_env(), cwd=str(SCENARIO.parent),
    )
    try:
        yield Script(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def our_python() -> str:
    return sys.executable


def stderr_tail(err: bytes | bytearray, lines: int = 40) -> str:
    """The last ``lines`` lines of a child's stderr, for a failure message.

    Example:
        >>> stderr_tail(b"one\\ntwo\\nthree\\n", lines=2)
        'two\\nthree'
    """
    return "\n".join(bytes(err).decode(errors="replace").splitlines()[-lines:])


class RefChild:
    """A script running under the reference SDK, its stdout and stderr collected as they come (a pipe nobody
    reads would stall it once full). See :func:`reference_child`."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.out = bytearray()
        self.err = bytearray()  # what came so far: a grandchild holding the pipe must not hide the rest
        self._drains = [asyncio.ensure_future(self._drain(proc.stdout, self.out)),
                        asyncio.ensure_future(self._drain(proc.stderr, self.err))]

    @staticmethod
    async def _drain(stream: asyncio.StreamReader, into: bytearray) -> None:
        while chunk := await stream.read(65536):
            into += chunk

    async def _drained(self) -> None:
        # The pipes reach EOF as the child exits, unless a process it started still holds them.
        with suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._drains), 2)

    async def _exit_failure(self, what: str) -> AssertionError:
        await self._drained()
        return AssertionError(f"reference child exited with code {self.proc.returncode} {what}; "
                              f"its stderr ends:\n{stderr_tail(self.err)}")

    async def watch(self, awaitable: Awaitable[T], wait_s: float = 20.0) -> T:
        """Await ``awaitable`` (the test's side of the exchange), failing at once, with the child's exit code and
        stderr, if the child exits with an error before it is done, or if it fails because the child did."""
        work = asyncio.ensure_future(awaitable)
        exited = asyncio.ensure_future(self.proc.wait())
        try:
            async with asyncio.timeout(wait_s):
                await asyncio.wait({work, exited}, return_when=asyncio.FIRST_COMPLETED)
                if not work.done() and self.proc.returncode != 0:
                    raise await self._exit_failure("while the test waited for its side")
                if not work.done() or work.exception() is None:
                    return await work  # a child that exited cleanly is done with its part
                # The test's side failed: a child dying mid-exchange is the cause to report, if it is dying.
                with suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(exited), 1)
                if self.proc.returncode not in (None, 0):
                    raise await self._exit_failure("and the test's side failed") from work.exception()
                return work.result()
        except TimeoutError:
            raise AssertionError(f"not done within {wait_s} s (reference child running: "
                                 f"{self.proc.returncode is None}); its stderr so far ends:\n"
                                 f"{stderr_tail(self.err)}") from None
        finally:
            for task in (work, exited):
                task.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await task

    async def finish(self, wait_s: float = 20.0) -> str:
        """Wait for the child to exit; its stdout, or a failure with its exit code and stderr if it did not exit 0."""
        try:
            await asyncio.wait_for(self.proc.wait(), wait_s)
        except TimeoutError:
            raise AssertionError(f"reference child still running after {wait_s} s; its stderr so far ends:\n"
                                 f"{stderr_tail(self.err)}") from None
        if self.proc.returncode != 0:
            raise await self._exit_failure("")
        await self._drained()
        return bytes(self.out).decode()


@asynccontextmanager
async def reference_child(script: str, *args: str) -> AsyncIterator[RefChild]:
    """Run ``script`` under the reference SDK (``python -P -c script *args``); killed on exit if still running.

    Example::

        async with reference_child("print('hi')") as child:
            assert await child.finish() == "hi\\n"
    """
    proc = await asyncio.create_subprocess_exec(
        # -P: the working directory (the repository) must not shadow the reference's own ``iii`` package.
        reference_python(), "-P", "-c", script, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    child = RefChild(proc)
    try:
        yield child
    finally:
        if proc.returncode is None:
            with suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        for drain in child._drains:
            drain.cancel()
            with suppress(asyncio.CancelledError):
                await drain


@asynccontextmanager
async def telemetry_worker(sdk: str, script: str, *args: str, ready: bytes,
                           wait_s: float = 20.0) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``script`` (``python -P -c script *args``) under ``sdk``'s SDK (``"ours"`` or ``"reference"``) with
    telemetry on and logs exported every 20 ms; entered once its first line of stdout is ``ready``, killed on exit.

    Example::

        async with telemetry_worker("reference", WORKER, engine.url, ready=b"ready") as proc:
            ...
    """
    python = our_python() if sdk == "ours" else reference_python()
    env = {**sdk_env(), "OTEL_ENABLED": "true", "OTEL_BLRP_SCHEDULE_DELAY": "20"}
    if sdk == "ours":
        env["PYTHONPATH"] = str(ROOT)
    proc = await asyncio.create_subprocess_exec(python, "-P", "-c", script, *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, cwd=os.getcwd())
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), wait_s)).strip() == ready
        yield proc
    finally:
        if proc.returncode is None:
            with suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()
