"""Every command's ``--…timeout`` refuses a negative number written as ``-inf`` or ``-1e5`` with the error any bad
value gets; argparse took such a value for an option and said "expected one argument" (only ``iii-engine``'s
inspect commands joined them before)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import pytest

from iii._cli import joined_timeouts, milliseconds, seconds
from iii_channels.cli import build_parser
from iii_channels.cli import parse_args as channel_args
from iii_engine.inspect_cli import parse_args as inspect_args
from iii_streams.cli import main as streams_main

Parse = Callable[[Sequence[str]], object]
COMMANDS: dict[str, tuple[Parse, list[str], str]] = {
    "iii-channel send --stall-timeout": (lambda argv: channel_args(build_parser(), list(argv)),
                                         ["send", "-", "--to", "f", "--stall-timeout"], "--stall-timeout"),
    "iii-channel serve --idle-timeout": (lambda argv: channel_args(build_parser(), list(argv)),
                                         ["serve", "--function", "f", "--out", "d", "--idle-timeout"],
                                         "--idle-timeout"),
    "iii-channel --connect-timeout": (lambda argv: channel_args(build_parser(), list(argv)),
                                      ["send", "-", "--to", "f", "--connect-timeout"], "--connect-timeout"),
    "iii-streams --timeout": (streams_main, ["current", "sqlite+aiosqlite://", "--timeout"], "--timeout"),
    "iii-engine health --timeout": (inspect_args, ["health", "--timeout"], "--timeout"),
}


@pytest.mark.parametrize("value", ["-inf", "-1e5", "-1", "-0.5"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_negative_timeout_gets_the_bad_value_error(command: str, value: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    parse, argv, option = COMMANDS[command]
    with pytest.raises(SystemExit) as exited:
        parse([*argv, value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: must be a number of seconds from 0.001 up, got '{value}'" in err, err
    assert "expected one argument" not in err


def test_only_a_number_after_a_timeout_option_is_joined() -> None:
    assert joined_timeouts(["--timeout", "-x"]) == ["--timeout", "-x"]  # an option, left to argparse
    assert joined_timeouts(["--json", "-1"]) == ["--json", "-1"]  # not a timeout option
    assert joined_timeouts(["--timeout=-1"]) == ["--timeout=-1"]
    assert joined_timeouts(["-", "--idle-timeout", "5"]) == ["-", "--idle-timeout", "5"]
    assert joined_timeouts(["--", "--timeout", "-1"]) == ["--", "--timeout", "-1"]  # after "--": no option
    assert joined_timeouts(["--timeout", "-1", "--", "-x"]) == ["--timeout=-1", "--", "-x"]


@pytest.mark.parametrize("value", ["5_0", "\u0663", " 5", "5 ", "0x10", "1_000"])
def test_a_timeout_is_written_in_ascii_decimal_notation(value: str) -> None:
    # float() takes each of these (or would after strip); a time limit is read only as people write numbers
    with pytest.raises(argparse.ArgumentTypeError, match=r"from 0\.001 up"):
        seconds(value)


def test_a_number_too_large_for_a_float_gets_the_at_most_error() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="at most 86400 seconds, got '1e309'"):
        seconds("1e309")
    with pytest.raises(argparse.ArgumentTypeError, match=r"from 0\.001 up, got '-1e309'"):
        seconds("-1e309")
    assert seconds("1E3") == 1000.0 and seconds(".5") == 0.5 and seconds("+3") == 3.0


def test_only_an_ascii_decimal_number_is_joined_to_a_timeout_option() -> None:
    assert joined_timeouts(["--timeout", "-\u0663"]) == ["--timeout", "-\u0663"]
    assert joined_timeouts(["--timeout", "-1_0"]) == ["--timeout", "-1_0"]
    assert joined_timeouts(["--timeout", "-.5e1"]) == ["--timeout=-.5e1"]


def test_a_long_value_that_is_no_number_is_refused_at_once_and_clipped() -> None:
    # The number pattern could split a run of digits every way before failing: 40,000 digits and an 'x' took 22 s
    # (100,000 about 140 s, past this suite's 30 s timeout); the whole value was echoed in the error
    for value in ("1" * 100_000 + "x", "-" + "1" * 100_000 + "e"):
        with pytest.raises(argparse.ArgumentTypeError) as refused:
            seconds(value)
        assert len(str(refused.value)) < 120 and "chars)" in str(refused.value)
        assert joined_timeouts(["--timeout", value]) == ["--timeout", value]


@pytest.mark.parametrize("value", ["\u0131nf", "\u0130nf", "-\u0131nf"])
def test_a_letter_that_only_folds_to_ascii_is_no_number(value: str) -> None:
    # without re.ASCII, IGNORECASE let U+0131 (dotless i) match 'i', and float() then raised a plain ValueError
    with pytest.raises(argparse.ArgumentTypeError, match=r"from 0\.001 up"):
        seconds(value)
    assert joined_timeouts(["--timeout", value]) == ["--timeout", value]


@pytest.mark.parametrize("value", ["0", "-5", "5_0", "1.5", " 5", "\u0661", "86400001", "1" * 100_000])
def test_iii_channel_timeout_ms_is_a_whole_number_of_milliseconds_in_range(
        value: str, capsys: pytest.CaptureFixture[str]) -> None:
    # type=int took -5 (the call failed only once connected), 5_0 and other scripts' digits
    with pytest.raises(SystemExit) as exited:
        channel_args(build_parser(), ["send", "-", "--to", "f", "--timeout-ms", value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --timeout-ms: must be a whole number of milliseconds from 1 to 86400000, got" in err, err
    assert len(err) < 300


def test_iii_channel_timeout_ms_takes_what_it_names() -> None:
    assert milliseconds("1") == 1 and milliseconds("+007") == 7 and milliseconds("86400000") == 86_400_000
    args = channel_args(build_parser(), ["send", "-", "--to", "f", "--timeout-ms", "2500"])
    assert args.timeout_ms == 2500
