"""``iii-channel``: a ``--to`` / ``--function`` of only whitespace is a usage error as an empty one is (it went on
to fail later, naming nothing useful), and an ``invocation_stopped`` whose message names its cause is not given a
second, guessed one ("… stopped: the engine is stopping (the receiver disconnected or stopped …)")."""

from __future__ import annotations

import pytest

from iii.errors import InvocationError
from iii_channels.cli import _why, main
from iii_engine.invocations import CALLEE_LEFT, ENGINE_STOPPING, stopped


@pytest.mark.parametrize("argv", [["serve", "--function", " ", "--out", "-"], ["send", "-", "--to", " \t"]])
def test_a_blank_function_id_is_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:  # before: DID NOT RAISE (it tried to connect)
        main([*argv, "--engine", "ws://127.0.0.1:9"])
    assert exited.value.code == 2
    option, value = argv[1:3] if argv[0] == "serve" else argv[2:4]
    assert capsys.readouterr().err == (f"iii-channel: {option}: a function id is required (got only whitespace, "
                                       f"{value!r}) (see iii-channel --help)\n")


@pytest.mark.parametrize("cause", [CALLEE_LEFT, ENGINE_STOPPING])
def test_a_stop_with_its_cause_is_not_given_another(cause: str) -> None:
    body = stopped("files::receive", cause)
    text = _why(InvocationError(body["code"], body["message"]))
    assert text == f"Invocation of files::receive stopped: {cause} (nothing is known to be stored)"


def test_a_bare_stop_still_says_what_it_means() -> None:
    text = _why(InvocationError("invocation_stopped", "Invocation stopped"))
    assert text.startswith("Invocation stopped (the receiver disconnected or stopped before it answered")
