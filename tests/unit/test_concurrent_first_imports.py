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
* a module outside a package imports the package whole before any of its modules, where the package's ``__init__``
  imports modules: ``from pkg.x import y`` first takes the lock of ``pkg.x`` and then imports ``pkg`` while holding
  it, so a thread running ``pkg/__init__`` (which imports ``pkg.x``) and this one wait for each other (CPython
  gh-83065). ``import pkg`` first, or ``from pkg import y``, takes the package's lock before any of its modules'.

The four top-level packages (``iii``, ``iii_channels``, ``iii_streams``, ``iii_engine``) import none of their modules
in their ``__init__`` (each name loads on first use), so code of callers may import any of their modules first
(``from iii.errors import IIIError`` while another thread runs ``import iii``): the races below start with such
entries too, by chance (a Barrier) and forced into the window where the two locks cross (a staged start).

``websockets`` has a cycle of its own (``datastructures`` -> ``exceptions`` -> ``http11`` -> ``datastructures``),
which two of our modules entering it at different ends met (``_DeadlockError``). Each module of ours imports
:mod:`iii.ws_imports` before anything of ``websockets``: the first thread loads all of it there, under that module's
one lock, and the others wait for that lock (the last tests check the imports; the crossing tests force the race).
"""
from __future__ import annotations

import ast
import functools
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


def _race(script: str, entries: str) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-c", script, *entries.split()], cwd=ROOT, capture_output=True, text=True,
                          timeout=25, check=False)
    return done.returncode, done.stdout.strip(), done.stderr[-2000:]


# Entries are packages, names, and modules. Not `iii_engine.channels.x`: that package's __init__ imports its
# modules, so a thread importing one of them first holds its lock while importing the package, and CPython (before
# its gh-83065 fix) reports the cycle with another thread running that __init__; only the package first avoids it,
# which our modules do (the last tests) and callers' must.
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
        returncode, stdout, stderr = _race(_RACE, entries)
        assert (returncode, stdout) == (0, "ok"), (entries, stdout, stderr)


# A module of `iii` first, beside another entry that imports `iii` (CPython gh-83065). Before `iii/__init__` loaded
# its names on first use: the first set failed each run ("cannot import name 'Connection' from partially initialized
# module 'iii.connection'"), the others now and then ("_DeadlockError: deadlock detected by _ModuleLock('iii.iii')").
SUBMODULE_FIRST = [
    "iii.iii_constants iii_channels.cli",
    "iii.iii:III iii_engine:Engine",
    "iii.errors:IIIError iii",
    "iii.channel_end iii_channels:source",
]


@pytest.mark.parametrize("entries", SUBMODULE_FIRST)
def test_a_thread_importing_a_module_of_iii_first_beside_one_importing_iii(entries: str) -> None:
    outcomes = [_race(_RACE, entries) for _ in range(10)]
    assert [outcome[:2] for outcome in outcomes] == [(0, "ok")] * 10, (entries, outcomes)


# The same entries, the crossing forced instead of left to chance: the other entries start first; the first of them
# to import `iii` stops while it holds the package's lock (in its loader's create_module, before `iii/__init__` runs)
# until the first entry's thread, started then, holds its module's lock and waits for that one.
_STAGED = textwrap.dedent("""
    import importlib, importlib._bootstrap as bootstrap, sys, threading, time
    first, *others = sys.argv[1:]
    holding = threading.Event()
    errors = []

    def waits_for(thread, owner):
        locks = bootstrap._blocking_on.get(thread.ident)  # one lock (3.11) or a list of them (3.12+)
        locks = locks if isinstance(locks, list) else [locks] if locks else []
        return any(lock.name == "iii" and lock.owner == owner for lock in locks)

    def hold_the_package(spec):
        deadline = time.monotonic() + 10
        while not waits_for(first_thread, threading.get_ident()):
            if time.monotonic() > deadline:
                errors.append("staging: the first entry never waited for iii")
                break
            time.sleep(0.001)  # polls a condition of the import system's, which offers no event
        return None  # the default module

    class Gate:
        # find_spec runs under the import system's global lock, which the first entry would wait for instead; the
        # loader's create_module runs with only the package's lock held, before the package is in sys.modules.
        def find_spec(self, name, path=None, target=None):
            if name != "iii" or threading.current_thread() is first_thread or holding.is_set():
                return None
            holding.set()
            for finder in sys.meta_path[sys.meta_path.index(self) + 1:]:
                spec = getattr(finder, "find_spec", lambda *args: None)(name, path, target)
                if spec is not None:
                    spec.loader.create_module = hold_the_package
                    return spec
            return None

    def enter(entry, gate=None):
        if gate is not None and not gate.wait(10):
            errors.append("staging: no other entry imported iii")
        module, _, name = entry.partition(":")
        try:
            loaded = importlib.import_module(module)
            if name:
                getattr(loaded, name)
        except BaseException as exc:
            errors.append(f"{entry}: {exc!r}")

    sys.meta_path.insert(0, Gate())
    first_thread = threading.Thread(target=enter, args=(first, holding))
    threads = [first_thread, *(threading.Thread(target=enter, args=(entry,)) for entry in others)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print(errors or "ok")
""")


@pytest.mark.parametrize("entries", SUBMODULE_FIRST)
def test_a_module_of_iii_first_while_another_thread_holds_the_package(entries: str) -> None:
    outcomes = [_race(_STAGED, entries) for _ in range(3)]
    assert [outcome[:2] for outcome in outcomes] == [(0, "ok")] * 3, (entries, outcomes)


# websockets (17.x) has an import cycle of its own (iii/ws_imports.py): `datastructures` -> `exceptions` -> `http11`
# -> `datastructures`. The first entry goes into it at one end and stops where a thread switch can stop it: between
# finding `held` missing from sys.modules and taking its lock (`_find_and_load`, which the import system looks up on
# each import), until another entry, started then, waits for a lock the first one holds. Before our modules imported
# websockets through iii.ws_imports, that other entry had gone in at the other end and held `held` while waiting for
# the first's module of the cycle: each run failed with "_DeadlockError: deadlock detected by
# _ModuleLock('websockets.datastructures')" (the error a full run once met by chance) or ('websockets.exceptions').
_WS_STAGED = textwrap.dedent("""
    import importlib, importlib._bootstrap as bootstrap, sys, threading, time
    held, first, *others = sys.argv[1:]
    arrived = threading.Event()
    errors = []
    find_and_load = bootstrap._find_and_load

    def waits_for_first(thread):
        locks = bootstrap._blocking_on.get(thread.ident)  # one lock (3.11) or a list of them (3.12+)
        locks = locks if isinstance(locks, list) else [locks] if locks else []
        return any(lock.owner == first_thread.ident for lock in locks)

    def staged_find_and_load(name, import_):
        if name == held and threading.current_thread() is first_thread and not arrived.is_set():
            arrived.set()
            deadline = time.monotonic() + 10
            while not any(waits_for_first(thread) for thread in threads[1:]):
                if time.monotonic() > deadline:
                    errors.append(f"staging: no other entry waited for the first one's locks")
                    break
                time.sleep(0.001)  # polls a condition of the import system's, which offers no event
        return find_and_load(name, import_)

    def enter(entry, gate=None):
        if gate is not None and not gate.wait(10):
            errors.append(f"staging: the first entry never imported {held}")
        module, _, name = entry.partition(":")
        try:
            loaded = importlib.import_module(module)
            if name:
                getattr(loaded, name)
        except BaseException as exc:
            errors.append(f"{entry}: {exc!r}")

    bootstrap._find_and_load = staged_find_and_load
    first_thread = threading.Thread(target=enter, args=(first,))
    threads = [first_thread, *(threading.Thread(target=enter, args=(entry, arrived)) for entry in others)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print(errors or "ok")
""")

# (held, the first entry, the other): the first goes in at `exceptions` (websockets.asyncio.server) and the other at
# `datastructures` (websockets.asyncio.client), or the other way round. Before: 10 failures in 10 runs of each.
WEBSOCKETS_CROSSINGS = [
    "websockets.datastructures iii_engine:Engine iii_channels:source",
    "websockets.exceptions iii_channels:source iii_engine:Engine",
    "websockets.datastructures iii_engine.server iii.connection",
    "websockets.exceptions iii.channel_end iii_engine.modules.stream",
]


@pytest.mark.parametrize("crossing", WEBSOCKETS_CROSSINGS)
def test_two_entries_crossing_in_websockets_import_cycle(crossing: str) -> None:
    outcomes = [_race(_WS_STAGED, crossing) for _ in range(3)]
    assert [outcome[:2] for outcome in outcomes] == [(0, "ok")] * 3, (crossing, outcomes)


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


@functools.cache
def _tree(module: str) -> ast.Module:
    # Parsing the ~160 source files takes 1-3 s; five tests (one of them three times) read the same tree.
    return ast.parse(MODULES[module].read_text(), str(MODULES[module]))


@functools.cache
def _parsed_graph() -> dict[str, tuple[str, ...]]:
    return {module: tuple(target for node in _executed(_tree(module).body) for target in _targets(module, node))
            for module in MODULES}


def _graph() -> dict[str, list[str]]:
    """Which modules of ours each module imports when it runs; a fresh copy, so callers may change it."""
    return {module: list(targets) for module, targets in _parsed_graph().items()}


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
    # The check itself: `from iii_engine.channels.machine import X` first holds iii_engine.channels.machine while
    # importing iii_engine.channels, whose __init__ imports that module; the package first does not, and a module of
    # `iii` (whose __init__ imports none of them) may come first.
    def found(sink_imports: list[str]) -> list[str]:
        entries = _entered_without_their_package({**_graph(), "iii_channels.sink": sink_imports})
        return [entry for entry in entries if entry.startswith("iii_channels.sink:")]

    channels = "iii_engine.channels"
    assert found([f"{channels}.machine"]) == [f"iii_channels.sink: {channels}.machine before {channels}"]
    assert found([channels, f"{channels}.machine"]) == []
    assert found(["iii.channels", "iii.errors"]) == []


def test_the_sdk_package_imports_none_of_its_modules() -> None:
    assert _graph()["iii"] == []


# websockets is entered through one module of ours, which loads it whole under its own lock (iii/ws_imports.py and
# the crossing tests above): each module of ours imports it before anything of websockets.
SHIM = "iii.ws_imports"


def _websockets_modules(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules of ``websockets`` that ``node`` imports (the one it imports from, for ``from x import y``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "websockets"]
    return [node.module] if not node.level and (node.module or "").split(".")[0] == "websockets" else []


def _websockets_before_the_shim(module: str, tree: ast.Module) -> str | None:
    """The first import of ``websockets`` that ``module`` runs before it imports :data:`SHIM`, if any."""
    for node in _executed(tree.body):
        if SHIM in _targets(module, node):
            return None
        if _websockets_modules(node):
            return ast.unparse(node)
    return None


def test_modules_import_the_shim_before_websockets() -> None:
    found = {module: _websockets_before_the_shim(module, _tree(module)) for module in MODULES if module != SHIM}
    assert {module: line for module, line in found.items() if line} == {}


def test_the_shim_rule_sees_websockets_imported_first() -> None:
    def first(source: str) -> str | None:
        return _websockets_before_the_shim("iii_engine.server", ast.parse(textwrap.dedent(source)))

    assert first("import asyncio\nfrom websockets.frames import Close\nimport iii.ws_imports\n") == (
        "from websockets.frames import Close")
    assert first("try:\n    import websockets.speedups\nexcept ImportError:\n    pass\n") == (
        "import websockets.speedups")
    assert first("import iii.ws_imports\nimport websockets\n") is None
    assert first("from iii import ws_imports\nfrom websockets.http11 import Request\n") is None
    assert first("if TYPE_CHECKING:\n    import websockets\n") is None
    assert first("def f():\n    import websockets\n") is None


def test_the_shim_loads_all_of_websockets_that_our_modules_import_and_nothing_of_ours() -> None:
    assert _graph()[SHIM] == []
    wanted = {name for module in MODULES for node in _executed(_tree(module).body)
              for name in _websockets_modules(node)}
    script = "import sys, iii.ws_imports; print(' '.join(name for name in sys.modules if name[:10] == 'websockets'))"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=25,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(wanted) >= 10 and wanted - set(done.stdout.split()) == set()
