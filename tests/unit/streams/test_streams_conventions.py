"""Library conventions of ``iii_streams`` (issues #9 and #11): no import cycle, logger names equal module paths,
one exported ``StreamError`` hierarchy, and the conformance suite in pytest-asyncio's strict mode."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import iii_streams
import iii_streams.errors
import iii_streams.testing

PACKAGE = Path(iii_streams.__file__).parent
ROOT = PACKAGE.parent


def _imports(path: Path) -> set[str]:
    """Every ``iii_streams`` module ``path`` imports, at any depth (function bodies included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module] if node.module else [alias.name for alias in node.names]
            found.update(f"iii_streams.{name.split('.')[0]}" for name in names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("iii_streams."):
            found.add(".".join(node.module.split(".")[:2]))  # type: ignore[union-attr]
        elif isinstance(node, ast.Import):
            found.update(".".join(a.name.split(".")[:2]) for a in node.names if a.name.startswith("iii_streams."))
    return found


def test_no_import_cycle_between_modules() -> None:
    graph = {f"iii_streams.{p.stem}": _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    graph = {module: {d for d in deps if d in graph and d != module} for module, deps in graph.items()}

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for dep in graph[node]:
                if dep == start:
                    return [*path, start]
                if dep not in path:
                    stack.append((dep, [*path, dep]))
        return None

    cycles = [c for c in map(cycle_from, sorted(graph)) if c]
    assert not cycles, "import cycle: " + " -> ".join(cycles[0])
    assert "iii_streams.urls" not in graph["iii_streams.base"]  # URL dispatch lives in urls.py only


def test_logger_names_are_module_paths() -> None:
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "getLogger":
                assert [ast.unparse(a) for a in node.args] == ["__name__"], f"{path.name}: {ast.unparse(node)}"


def test_every_stream_error_is_exported() -> None:
    errors = {name for name, obj in vars(iii_streams.errors).items()
              if inspect.isclass(obj) and issubclass(obj, iii_streams.StreamError) and not name.startswith("_")}
    errors.add("StreamLagError")
    assert errors <= set(iii_streams.__all__)
    for name in errors:
        assert issubclass(getattr(iii_streams, name), iii_streams.StreamError), name
    assert issubclass(iii_streams.PoolExhaustedError, iii_streams.StreamUnavailableError)
    assert issubclass(iii_streams.StreamTimeoutError, TimeoutError)


def test_documented_conformance_example_passes_in_strict_mode(tmp_path: Path) -> None:
    """The example of ``iii_streams.testing``'s docstring, as a user would paste it, under ``asyncio_mode=strict``
    (before: 27 errors, because a plain ``@pytest.fixture`` async fixture is not run in strict mode)."""
    doc = iii_streams.testing.__doc__ or ""
    example = textwrap.dedent(doc.split("Example (a test module)::", 1)[1])
    (tmp_path / "test_my_store.py").write_text(example)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "asyncio_mode=strict",
         "-o", "asyncio_default_fixture_loop_scope=function", "test_my_store.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=25)
    summary = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "error" not in summary and "failed" not in summary, summary
    assert " passed" in summary
