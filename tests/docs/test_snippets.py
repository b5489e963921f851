"""Every ```python block in docs/ and README.md runs as written, in its own interpreter, within a time limit.

A block may be preceded by one marker line:

- ``<!-- not-run: REASON -->``: shown but not executed (the reason is required and must say why);
- ``<!-- requires: redis -->``: executed only when Redis answers (skipped, or failed under CI, otherwise).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services import require_redis

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
SNIPPET_TIMEOUT_S = 25.0
# Fewer than this many runnable blocks means the extraction broke (or the docs lost their examples).
MIN_RUNNABLE = 12

_FENCE = re.compile(r"^```python\s*$")
_MARKER = re.compile(r"^<!--\s*(not-run|requires):\s*(.*?)\s*-->\s*$")
_REQUIREMENTS = {"redis"}


@dataclass(frozen=True)
class Snippet:
    """One fenced ```python block of a Markdown file."""

    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    marker: tuple[str, str] | None  # ("not-run", reason) or ("requires", service)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def extract(path: Path) -> list[Snippet]:
    """The ```python blocks of ``path``; an unclosed block is an error naming its line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    snippets: list[Snippet] = []
    i = 0
    while i < len(lines):
        if not _FENCE.match(lines[i]):
            i += 1
            continue
        start = i
        marker = None
        if start > 0 and (found := _MARKER.match(lines[start - 1])):
            marker = (found.group(1), found.group(2))
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"{path}:{start + 1}: ```python block is never closed")
        snippets.append(Snippet(path, start + 1, "\n".join(body) + "\n", marker))
        i += 1
    return snippets


def markdown_files() -> list[Path]:
    """The Markdown files whose snippets are checked: README.md, then every page under docs/."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def all_snippets() -> list[Snippet]:
    """Every ```python block of README.md and under docs/, in file order."""
    return [s for md in markdown_files() for s in extract(md)]


SNIPPETS = all_snippets()
RUNNABLE = [s for s in SNIPPETS if s.marker is None or s.marker[0] == "requires"]


def run_snippet(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a script with this interpreter in ``cwd`` (the repository importable)."""
    script = cwd / "snippet.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=SNIPPET_TIMEOUT_S, check=False)


@pytest.mark.parametrize("snippet", RUNNABLE, ids=[s.where for s in RUNNABLE])
def test_snippet_runs(snippet: Snippet, tmp_path: Path) -> None:
    if snippet.marker is not None:
        require_redis()  # the only requirement there is (checked by test_markers_are_valid)
    try:
        done = run_snippet(snippet.code, tmp_path)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{snippet.where}: still running after {SNIPPET_TIMEOUT_S:g} s; output: {exc.stderr!r}")
    assert done.returncode == 0, (
        f"{snippet.where} exited with {done.returncode}\n--- stdout\n{done.stdout[-2000:]}\n"
        f"--- stderr\n{done.stderr[-4000:]}"
    )


def test_markers_are_valid() -> None:
    problems = []
    for snippet in SNIPPETS:
        if snippet.marker is None:
            continue
        kind, text = snippet.marker
        if kind == "not-run" and len(text.split()) < 3:
            problems.append(f"{snippet.where}: not-run needs a reason of a few words, got {text!r}")
        if kind == "requires" and text not in _REQUIREMENTS:
            problems.append(f"{snippet.where}: unknown requirement {text!r} (known: {sorted(_REQUIREMENTS)})")
    assert not problems, "\n".join(problems)


def test_every_marker_precedes_a_python_block() -> None:
    stray = []
    for md in markdown_files():
        lines = md.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            if _MARKER.match(line) and not (n + 1 < len(lines) and _FENCE.match(lines[n + 1])):
                stray.append(f"{md.relative_to(ROOT)}:{n + 1}")
    assert not stray, f"markers not directly above a ```python block: {stray}"


def test_readme_snippets_are_checked() -> None:
    # README.md is the first page a user reads: its blocks are in the set, and at least one of them runs
    readme = [s for s in SNIPPETS if s.path == README]
    assert readme, "no ```python block found in README.md"
    assert any(s in RUNNABLE for s in readme), "every README.md block is marked not-run"


def test_docs_have_enough_runnable_snippets() -> None:
    assert len(RUNNABLE) >= MIN_RUNNABLE, f"only {len(RUNNABLE)} runnable snippets found under {DOCS}"


def test_extractor_reports_a_failing_snippet(tmp_path: Path) -> None:
    # The harness itself: a block that raises must show up as a non-zero exit, an unclosed block as an error.
    md = tmp_path / "page.md"
    md.write_text("text\n<!-- not-run: shown only, never executed -->\n```python\nimport nothing_here\n```\n"
                  "```python\nraise SystemExit(3)\n```\n", encoding="utf-8")
    found = extract(md)
    assert [s.marker for s in found] == [("not-run", "shown only, never executed"), None]
    assert run_snippet(found[1].code, tmp_path).returncode == 3
    md.write_text("```python\nprint(1)\n", encoding="utf-8")
    with pytest.raises(ValueError, match="never closed"):
        extract(md)
