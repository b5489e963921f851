"""A sender's name never drives the terminal that shows it, and a receiver never stores one that would.

Before: ``name_part_problem`` refused only C0 controls and DEL, so ``serve --out inbox`` stored a file named
``\\x9b2J\\x9b31mOK\\u202egpj.exe`` (C1 CSI sequences, and a right-to-left override that shows ``gpj.exe`` as
``exe.jpg``), and NEL, U+2028 and U+2029 (which ``str.splitlines`` splits at) passed; a :class:`ProgressBar` drew its
label raw, so ``serve --out -`` printed a sender's escape sequences on its stderr (window title set, screen cleared).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import sys
import unicodedata
from pathlib import Path

import pytest

from iii.channels import ChannelWriter
from iii_channels import receive_dir
from iii_channels.files import checked_file_name, file_header, name_part_problem, receive_file, send_file
from iii_channels.integrity import Digest
from iii_channels.progress import ProgressBar, _make_progress, printable
from iii_channels.sink import ChannelSink
from iii_channels.trees import END_KEY, ENTRY_KEY, TREE_KEY, check_entry_path
from iii_engine.testing import local_channel

BIDI_CONTROLS = [*map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))]
HOSTILE = "\x1b]0;PWNED-TITLE\x07\x1b[2J\x1b[31mall transfers verified OK\x1b[0m\u202egpj.exe"


BIDI = "a bidi control (it shows the name's characters out of order)"


@pytest.mark.parametrize(("name", "shown", "kind"), [
    ("a\x85b", "\\x85", "a control character"),  # NEL
    ("a\x9b2Jb", "\\x9b", "a control character"),  # C1 CSI
    ("a\x7fb", "\\x7f", "a control character"),
    ("a\tb", "\\t", "a control character"),
    ("a\u2028b", "\\u2028", "a line or paragraph separator"),
    ("a\u2029b", "\\u2029", "a line or paragraph separator"),
    ("a\u202eb", "\\u202e", BIDI),
    ("a\u2066b", "\\u2066", BIDI),
    # the byte 0x9b of a name that is not UTF-8 (surrogateescape): CSI to a Latin-1 terminal
    ("a\udc9b2Jb", "\\udc9b", "a control character as a raw byte (0x9b, not UTF-8)"),
    ("a\udc85b", "\\udc85", "a control character as a raw byte (0x85, not UTF-8)"),
])
def test_the_character_refused_is_named_with_its_place(name: str, shown: str, kind: str) -> None:
    problem = f"it contains {kind}: {shown} at character 2"
    assert name_part_problem(name) == problem
    with pytest.raises(ValueError, match=re.escape(problem)):
        checked_file_name(name)
    with pytest.raises(ValueError, match=re.escape(problem)):
        check_entry_path(f"dir/{name}")


def test_the_refused_set_is_cc_zl_zp_the_nine_bidi_controls_and_c1_bytes() -> None:
    """Refused (as a character, with its place) exactly when it is one of them: over the planes that hold any
    assigned character but private use (the Cc set is fixed for good, Zl and Zp are one character each), and the
    C1 controls as the raw bytes of a name that is not UTF-8 (U+DC80-U+DC9F, surrogateescape's 0x80-0x9F)."""
    bidi = set(BIDI_CONTROLS)
    wrong = []
    for point in [*range(0x30000), *range(0xE0000, 0xE1000)]:
        char = chr(point)
        if char in "\\/":
            continue
        expected = unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in bidi or 0xDC80 <= point <= 0xDC9F
        problem = name_part_problem(f"x{char}y")
        refused = problem is not None and problem.endswith(" at character 2")
        if refused != expected:
            wrong.append((hex(point), problem))
    assert wrong == []


@pytest.mark.parametrize("name", ["résumé.pdf", "文件.txt", "👨\u200d👩\u200d👧.png",
                                  "\u05e9\u05dc\u05d5\u05dd\u200f.txt", "a\u200eb", "a\u061cb", "a\u200bb",
                                  # Latin-1 "café", "naïve": bytes 0xA0-0xFF of a name that is not UTF-8
                                  "caf\udce9", "na\udcefve", "\udca0\udcff"])
def test_names_of_other_scripts_and_the_bidi_marks_are_accepted(name: str) -> None:
    assert name_part_problem(name) is None
    assert checked_file_name(name) == name


async def test_send_file_refuses_before_sending_and_receive_file_refuses_the_sender(tmp_path: Path) -> None:
    src = tmp_path / "\x9b2J\x9b31mOK\u202egpj.exe"
    src.write_bytes(b"data")
    async with local_channel() as channel:
        with pytest.raises(ValueError, match=r"control character: \\x9b at character 1"):
            await send_file(channel.writer, src)
    inbox = tmp_path / "inbox"
    inbox.mkdir()

    async def hostile(writer: ChannelWriter) -> None:  # a sender of its own making: no check before sending
        async with ChannelSink(writer, trailer=True) as sink:
            await sink.send_text(file_header("a\u2028b", 1))
            await sink.write(b"x")

    async with local_channel() as channel:
        _, received = await asyncio.gather(hostile(channel.writer), receive_file(channel.reader, inbox),
                                           return_exceptions=True)
    assert isinstance(received, ValueError), received
    assert "line or paragraph separator: \\u2028 at character 2" in str(received)
    assert list(inbox.iterdir()) == []


def test_a_progress_bar_escapes_its_label() -> None:
    for tty in (False, True):
        out = io.StringIO()
        bar = ProgressBar(label=HOSTILE, stream=out, interval=0, tty=tty)
        bar(8, 8)
        bar.close()
        drawn = out.getvalue()
        assert not any(char in drawn for char in "\x1b\x07\u202e"), repr(drawn)
        assert "\\x1b]0;PWNED-TITLE\\x07\\x1b[2J" in drawn and "\\u202egpj.exe" in drawn


def test_a_progress_bar_made_by_an_adapter_escapes_its_label(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    reporter = _make_progress(True, total=4, label="a\x9b2Jb")
    assert reporter is not None
    reporter(4)
    reporter.close()
    assert "\x9b" not in out.getvalue() and "a\\x9b2Jb" in out.getvalue()


def test_printable_leaves_printable_text_alone_and_escapes_the_rest() -> None:
    text = "été 文件 a b"
    assert printable(text) is text
    assert printable("a\nb\x85c\u2028d\U000e0001") == "a\\nb\\x85c\\u2028d\\U000e0001"


async def test_receive_dir_refuses_a_c1_control_as_a_raw_byte_in_an_entry_name(tmp_path: Path) -> None:
    """Before: the entry "\\udc9b2J\\udc9b31mOK" was stored as the file b"\\x9b2J\\x9b31mOK" (C1 CSI sequences)."""
    name = "\udc9b2J\udc9b31mOK"

    async def tree(writer: ChannelWriter) -> None:  # a sender of its own making: no check before sending
        records = Digest()
        async with ChannelSink(writer, trailer=True) as sink:
            for text in (json.dumps({ENTRY_KEY: {"path": name, "type": "file", "size": 0}}),
                         json.dumps({END_KEY: {"bytes": 0, "sha256": Digest().hexdigest()}})):
                records.update_text(text)
                await sink.send_text(text)
            await sink.send_text(json.dumps({TREE_KEY: {"records": 2, "sha256": records.hexdigest()}}))

    async with local_channel() as channel:
        _, received = await asyncio.gather(tree(channel.writer), receive_dir(channel.reader, tmp_path / "out"),
                                           return_exceptions=True)
    assert isinstance(received, Exception), received
    assert "it contains a control character as a raw byte (0x9b, not UTF-8): \\udc9b at character 1" in str(
        received), received
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []
