"""``iii-channel``'s one-line messages name what the reader of them can act on."""

from __future__ import annotations

from pathlib import Path

import pytest

from iii_channels.cli import _directory_target, main


def test_an_unknown_argument_is_named_before_the_missing_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--bogus"])
    assert exited.value.code == 2
    # before: "iii-channel: the following arguments are required: command" (--bogus never named)
    assert capsys.readouterr().err == "iii-channel: unrecognized arguments: --bogus (see iii-channel --help)\n"


def test_no_command_is_still_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "required: a command (send or serve)" in capsys.readouterr().err


def test_an_existing_file_is_worded_for_the_sender(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"x")
    with pytest.raises(FileExistsError) as refused:
        _directory_target(tmp_path, "big.bin", overwrite=False)
    # before: "... already exists; pass --overwrite to replace it", a serve flag the sender cannot pass
    assert str(refused.value) == f"{tmp_path / 'big.bin'} already exists on the receiver (serve --overwrite " \
                                 "replaces files)"
    assert _directory_target(tmp_path, "big.bin", overwrite=True) == tmp_path / "big.bin"
