"""``examples/demo.py --store URL`` with nothing at URL: one line on stderr and exit 1, as the CLIs do."""

from __future__ import annotations

import asyncio
import socket

import pytest

from examples import demo


def test_an_unreachable_store_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    # bound but not listening: a connection to it is refused at once, and no other process can take the port
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        # before: ModuleStartError escaped main (a traceback, exit 1 only by accident of the traceback)
        status = asyncio.run(demo.main(["--store", f"redis://127.0.0.1:{port}/0", "--size-mb", "0.01"]))
    captured = capsys.readouterr()
    assert status == 1
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("demo: module modules::stream::StreamModule cannot start: ")
    assert f"Redis at redis://127.0.0.1:{port}/0 unreachable" in lines[0]
    assert captured.out == ""
