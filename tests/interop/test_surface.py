"""Our ``iii`` package offers every public name of the reference ``iii-sdk`` 0.10 with the same shape
(docs/protocol.md#reference-sdk-differences).

``surface_dump.py`` describes the surface under each interpreter; :func:`surface_diff` lists every place where
ours lacks or changes something the reference has. Extra names, methods, optional fields, enum members and
trailing parameters with defaults of ours are fine; private names are never compared. Intentional differences
are in :data:`ALLOWED`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .refsdk import reference_python, sdk_env

pytestmark = pytest.mark.interop

DUMP = Path(__file__).with_name("surface_dump.py")

# Paths (as produced by surface_diff) where ours differs on purpose, each with the docs/protocol.md item allowing it.
ALLOWED: dict[str, str] = {
    # docs/protocol.md#sdk-improvements S12: telemetry goes over the worker socket, so the connection wraps a frame
    # sink; a URL given
    # positionally (the reference's only argument) is still accepted.
    "iii.telemetry_exporters.names.SharedEngineConnection.init.params": "docs/protocol.md#sdk-improvements S12",
}

# Keys under which ours may have entries the reference lacks (extra names, methods, members).
_OPEN_MAPPINGS = frozenset({"names", "methods", "members", "fields", "attributes"})


def dump_surface(python: str) -> dict[str, Any]:
    """Run ``surface_dump.py`` under ``python`` (outside the checkout, so the right ``iii`` is imported)."""
    proc = subprocess.run(
        [python, str(DUMP)], capture_output=True, text=True, env=sdk_env(), cwd="/", timeout=60, check=False
    )
    assert proc.returncode == 0, f"surface dump under {python} failed:\n{proc.stderr[-3000:]}"
    surface: dict[str, Any] = json.loads(proc.stdout)
    return surface


def surface_diff(ref: Any, ours: Any, path: str = "") -> list[str]:
    """Every way ``ours`` fails to match ``ref``, one line each, as ``path: explanation``.

    Example:
        >>> surface_diff({"names": {"a": {"kind": "function"}}}, {"names": {}})
        ['names.a: missing']
    """
    if isinstance(ref, dict) and isinstance(ours, dict):
        problems: list[str] = []
        key = path.rsplit(".", 1)[-1]
        for name, ref_value in ref.items():
            sub = f"{path}.{name}" if path else name
            if name == "file":
                continue
            if name not in ours:
                problems.append(f"{sub}: missing")
            else:
                problems.extend(surface_diff(ref_value, ours[name], sub))
        if key == "fields":
            # An extra model field only hurts when callers must now pass it.
            for name, value in ours.items():
                if name not in ref and isinstance(value, dict) and value.get("required"):
                    problems.append(f"{path}.{name}: extra required field")
        elif key not in _OPEN_MAPPINGS:
            problems.extend(f"{path}.{name}: unexpected" for name in ours if name not in ref)
        return problems
    if path.endswith(".all") and ref is None:
        return []  # the reference has no __all__ there; ours having one takes nothing away
    if path.endswith(".all") and isinstance(ref, list) and isinstance(ours, list):
        missing = sorted(set(ref) - set(ours))
        return [f"{path}: missing {missing}"] if missing else []
    if path.endswith(".params") and isinstance(ref, list) and isinstance(ours, list):
        # Every call valid against the reference stays valid if ours only appends parameters with defaults.
        head, tail = ours[: len(ref)], ours[len(ref):]
        if head == ref and all("default" in p or p["kind"].startswith("VAR_") for p in tail):
            return []
    if ref != ours:
        return [f"{path}: reference {json.dumps(ref)}, ours {json.dumps(ours)}"]
    return []


@pytest.fixture(scope="module")
def surfaces() -> tuple[dict[str, Any], dict[str, Any]]:
    return dump_surface(reference_python()), dump_surface(sys.executable)


def test_dumps_describe_the_two_different_packages(surfaces: tuple[dict[str, Any], dict[str, Any]]) -> None:
    ref, ours = surfaces
    # the reference environment may live inside the checkout (.ref-venv), so compare with our package folder
    ours_dir = Path(__file__).resolve().parents[2] / "iii"
    assert Path(ref["iii"]["file"]).resolve().parent != ours_dir, "the reference dump imported our package"
    assert Path(ours["iii"]["file"]).resolve().parent == ours_dir, "our dump imported some other package"
    assert len(ref["iii"]["all"]) == 45
    assert ref["iii.iii"]["names"]["III"]["kind"] == "class"


def test_ours_is_a_superset_of_the_reference(surfaces: tuple[dict[str, Any], dict[str, Any]]) -> None:
    ref, ours = surfaces
    problems = surface_diff(ref, ours)
    unexpected = [p for p in problems if p.split(":", 1)[0] not in ALLOWED]
    assert not unexpected, f"{len(unexpected)} surface mismatches against iii-sdk 0.10:\n" + "\n".join(unexpected)


def test_every_allowed_difference_still_exists(surfaces: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """A stale allow-list entry would hide a future regression on that path."""
    ref, ours = surfaces
    seen = {p.split(":", 1)[0] for p in surface_diff(ref, ours)}
    assert set(ALLOWED) <= seen, f"allow-list entries no longer needed: {sorted(set(ALLOWED) - seen)}"


def test_diff_reports_changed_defaults_and_missing_names() -> None:
    ref = {"m": {"all": ["a", "b"], "names": {"f": {"kind": "function", "signature": {"params": [
        {"name": "x", "kind": "POSITIONAL_OR_KEYWORD", "default": "1"}]}}}}}
    ours = {"m": {"all": ["a", "c"], "names": {"f": {"kind": "function", "signature": {"params": [
        {"name": "x", "kind": "POSITIONAL_OR_KEYWORD", "default": "2"}]}}, "extra": {"kind": "function"}}}}
    problems = surface_diff(ref, ours)
    assert problems == [
        "m.all: missing ['b']",
        'm.names.f.signature.params: reference [{"name": "x", "kind": "POSITIONAL_OR_KEYWORD", "default": "1"}], '
        'ours [{"name": "x", "kind": "POSITIONAL_OR_KEYWORD", "default": "2"}]',
    ]
