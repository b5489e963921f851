"""Threads importing our packages for the first time at once, by any entry (a package, a public name of a lazy
package, a submodule), all get whole modules: none gets "cannot import name ... from partially initialized module"
or ``_DeadlockError``.

CPython gives each module a lock, held while the module runs. Two threads that take two of those locks in opposite
orders form a cycle, which the import system breaks by handing one of them the half-made module (or raising
``_DeadlockError``). Two rules keep our import graph free of such cycles, and the tests below enforce them over the
source tree (the first by importing every module in one thread and watching its locks, the second by reading the
imports):

* nothing waits for a package still running its ``__init__`` from a module that ``__init__`` imports (directly or
  not). ``from . import x`` and ``import pkg.x as y`` wait for the package; ``from .x import name`` does not.
* a module outside a package imports the package whole before any of its modules: ``from iii.x import y`` first
  takes the lock of ``iii.x`` and then imports ``iii`` while holding it, so a thread running ``iii/__init__``
  (which imports ``iii.x``) and this one wait for each other (CPython gh-83065). ``import iii`` first, or
  ``from iii import y``, takes the package's lock before any of its modules'.

Code of callers is bound by the second rule too: a thread whose first import is ``iii.connection`` (or any module
of a package whose ``__init__`` imports it) can meet one importing ``iii`` at that moment, on CPython before the
fix of gh-83065.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("iii", "iii_channels", "iii_streams", "iii_engine")

pytestmark = pytest.mark.timeout(30)

# argv: the entries, one per thread; "module:name" gets a name from a module, "module" imports it.
_RACE = textwrap.dedent("""
    import importlib, sys, threading
    entries = sys.argv[1:]
    start = threading.Barrier(len(entries))
    errors = []
    def enter(entry):
        module, _, name = entry.partition(":")
        start.wait()
        try:
            loaded = importlib.import_module(module)
            if name:
                getattr(loaded, name)
        except BaseException as exc:
            errors.append(f"{entry}: {exc!r}")
    threads = [threading.Thread(target=enter, args=(entry,)) for entry in entries]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print(errors or "ok")
""")

# Entries are packages, names, and modules of the packages whose __init__ imports none of their modules. Not `iii.x`
# nor `iii_engine.channels.x`: a thread importing one of those first takes its lock, then imports the package, and if
# another thread is importing that package at that moment (its __init__ imports `x`), CPython (before its gh-83065
# fix) reports the cycle; only the package first avoids it, which our modules do (the last tests) and callers' must.
ENTRY_SETS = [
    # Before: each run failed, each thread with "cannot import name 'Connection' from partially initialized module
    # 'iii.connection'" (iii.connection ran `from . import ws_fastpath`, which waits for the package `iii`).
    "iii_channels.cli iii_channels:source iii_engine:Engine",
    # Before: about 1 run in 2 "_DeadlockError: deadlock detected by _ModuleLock('iii.protocol')" (iii_streams.errors
    # held iii.protocol.codec and iii.protocol while waiting for iii).
    "iii_streams.errors iii_streams:MemoryStream iii_engine.workers",
    "iii iii_channels:sink iii_streams.base iii_engine.settings",
    "iii_engine.modules.state iii_engine.modules.stream iii_streams.redis iii_engine:EngineConfig",
    "iii_engine.channels iii_engine.server iii_channels.files iii",
    "iii_engine.modules.queue iii_engine.modules.bridge iii_engine.modules.stream iii_channels.cli",
    "iii_engine.testing iii_channels.pipes iii_streams.urls iii_engine.server",
]


@pytest.mark.parametrize("entries", ENTRY_SETS)
def test_threads_importing_at_once_by_different_entries_all_succeed(entries: str) -> None:
    for _ in range(4):
        done = subprocess.run([sys.executable, "-c", _RACE, *entries.split()], cwd=ROOT, capture_output=True,
                              text=True, timeout=25, check=False)
        assert (done.returncode, done.stdout.strip()) == (0, "ok"), (entries, done.stdout, done.stderr[-2000:])


# Imports every module of ours in one thread, each package before its modules; a wait for a module this same
# thread is still running (its lock taken a second time) closes a cycle that two threads can each hold half of.
_CYCLES = textwrap.dedent("""
    import importlib, importlib._bootstrap as bootstrap, pkgutil, sys
    packages = sys.argv[1:]
    held, cycles = [], set()
    acquire, release = bootstrap._ModuleLock.acquire, bootstrap._ModuleLock.release
    def watched_acquire(lock):
        if lock.name in held and held[-1] != lock.name and lock.name.split(".")[0] in packages:
            cycles.add(" -> ".join([*held[held.index(lock.name):], lock.name]))
        acquire(lock)
        held.append(lock.name)
    def watched_release(lock):
        release(lock)
        del held[len(held) - 1 - held[::-1].index(lock.name)]
    bootstrap._ModuleLock.acquire, bootstrap._ModuleLock.release = watched_acquire, watched_release
    for package in packages:
        importlib.import_module(package)
        for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
            importlib.import_module(info.name)
    print(sorted(cycles) or "ok")
""")


def test_no_module_waits_for_a_module_still_importing_it() -> None:
    done = subprocess.run([sys.executable, "-c", _CYCLES, *PACKAGES], cwd=ROOT, capture_output=True, text=True,
                          timeout=25, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), (done.stdout, done.stderr[-2000:])


# The static half: which modules a module imports when it runs (not in functions, not under TYPE_CHECKING).


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _executed(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if ast.unparse(node.test) != "TYPE_CHECKING":
                yield from _executed(node.body)
            yield from _executed(node.orelse)
        elif isinstance(node, ast.Try):
            for part in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                yield from _executed(part)
        elif isinstance(node, ast.With):
            yield from _executed(node.body)


def _package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules of ours ``node`` imports, in the order it takes their locks."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] in PACKAGES]
    base = node.module or ""
    if node.level:
        anchor = _package_of(module).split(".")
        anchor = anchor[: len(anchor) - node.level + 1]
        base = ".".join([*anchor, *([base] if base else [])])
    if base.split(".")[0] not in PACKAGES:
        return []
    submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]
    return [base, *submodules]


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _closure(start: str, graph: dict[str, list[str]]) -> set[str]:
    """The modules of ours that importing ``start`` imports, its packages (already imported by then) left out."""
    above = set(_ancestors(start))
    seen, todo = set(above), [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in MODULES:
            continue
        seen.add(name)
        todo.extend(graph.get(name, ()))
        todo.extend(_ancestors(name))  # importing a module imports its packages first
    return seen - above


def _graph() -> dict[str, list[str]]:
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[module] = [target for node in _executed(tree.body) for target in _targets(module, node)]
    return graph


def _entered_without_their_package(graph: dict[str, list[str]]) -> list[str]:
    """Imports that take a module's lock, then wait for a package not imported yet whose ``__init__``, run by
    another thread, imports that module."""
    found = []
    for module, targets in graph.items():
        loaded = {module, *_ancestors(module)}  # a module's own packages are in sys.modules when it runs
        for target in targets:
            # The import takes the target's lock, then imports each missing package above it, holding the locks.
            held = {target}
            for package in reversed(_ancestors(target)):
                if package in loaded:
                    break
                if held & _closure(package, graph):
                    found.append(f"{module}: {target} before {package}")
                    break
                held.add(package)
            loaded |= {*_ancestors(target), *_closure(target, graph)}
    return found


def test_modules_import_a_package_before_its_modules() -> None:
    assert _entered_without_their_package(_graph()) == []


def test_the_entry_rule_sees_a_module_imported_before_its_package() -> None:
    # The check itself: `from iii.channels import X` first holds iii.channels while importing iii, whose
    # __init__ imports iii.channels; `import iii` first does not.
    def found(sink_imports: list[str]) -> list[str]:
        entries = _entered_without_their_package({**_graph(), "iii_channels.sink": sink_imports})
        return [entry for entry in entries if entry.startswith("iii_channels.sink:")]

    assert found(["iii.channels"]) == ["iii_channels.sink: iii.channels before iii"]
    assert found(["iii._cli", "iii.channels"]) == []  # `import iii` does not import iii._cli: no cycle
    assert found(["iii", "iii.channels"]) == []
