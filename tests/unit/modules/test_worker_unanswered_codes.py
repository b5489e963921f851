"""The error codes a functions-available push counts as "not answered" (pushed again) are codes the engine sends.

Why: ``channel_send_failed`` stayed listed after the engine stopped sending it (51786bf: a call whose callee's
connection was lost is ``invocation_stopped``), a dead entry that hid which codes the push really depends on.
"""

from __future__ import annotations

import ast
from pathlib import Path

import iii_engine
from iii_engine.modules.worker import module

ENGINE = Path(iii_engine.__file__).parent


def _literals_outside(skip: Path) -> set[str]:
    """Every string constant in the engine's sources but ``skip``."""
    found: set[str] = set()
    for path in ENGINE.rglob("*.py"):
        if path.resolve() == skip.resolve():
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return found


def test_every_unanswered_code_is_one_the_engine_sends() -> None:
    assert module._UNANSWERED, "the push's unanswered codes"
    produced = _literals_outside(Path(module.__file__))
    assert sorted(module._UNANSWERED - produced) == []
