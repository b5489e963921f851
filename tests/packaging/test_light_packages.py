"""``import iii_engine`` / ``iii_channels`` / ``iii_streams`` and their ``__main__`` load none of the toolkit (its
names load on first use, so a console script can catch a Ctrl-C before the heavy imports), while every public
name stays importable as before, ``dir()`` lists them and ``iii_channels.sink`` / ``.source`` stay the functions
once their submodules are imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.packaging.helpers import ROOT

pytestmark = pytest.mark.timeout(30)

_CHECK = textwrap.dedent("""
    import importlib, sys
    package = importlib.import_module(sys.argv[1])
    importlib.import_module(sys.argv[1] + ".__main__")
    heavy = sorted(name for name in sys.modules if name.split(".")[0] in ("iii", "websockets", "typing")
                   or name.startswith(sys.argv[1] + ".") and name != sys.argv[1] + ".__main__")
    assert not heavy, heavy
    names = [*package.__all__, "__version__"]
    assert set(names) <= set(dir(package)), set(names) - set(dir(package))
    for name in names:
        getattr(package, name)
    namespace = {}
    exec(f"from {sys.argv[1]} import *", namespace)
    assert set(package.__all__) <= set(namespace)
    try:
        package.no_such_name
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("no AttributeError")
    print("ok")
""")


@pytest.mark.parametrize("package", ["iii_engine", "iii_channels", "iii_streams"])
def test_the_package_is_light_and_keeps_its_names(package: str) -> None:
    done = subprocess.run([sys.executable, "-c", _CHECK, package], cwd=ROOT, capture_output=True, text=True,
                          timeout=25, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr


def test_the_channel_functions_are_not_hidden_by_their_submodules() -> None:
    script = textwrap.dedent("""
        import iii_channels
        from iii_channels.files import send_file  # imports the submodules sink and source first
        import iii_channels.sink
        from iii_channels.sink import sink
        from iii_channels.source import source
        assert iii_channels.sink is sink and iii_channels.source is source, (iii_channels.sink, iii_channels.source)
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=25,
                          check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr


@pytest.mark.parametrize(("package", "submodule", "name"),
                         [("iii_engine", "engine", "Engine"), ("iii_channels", "files", "send_file"),
                          ("iii_streams", "memory", "MemoryStream")])
def test_submodules_stay_attributes_and_dir_shows_no_helpers(package: str, submodule: str, name: str) -> None:
    # Importing the package used to import every submodule, so `import iii_engine; iii_engine.engine` worked.
    script = textwrap.dedent(f"""
        import {package} as package
        assert getattr(package.{submodule}, "{name}") is package.{name}
        listed = dir(package)
        assert "{submodule}" in listed and "{name}" in listed, listed
        assert not [n for n in listed if n.startswith("_") and not n.startswith("__")], listed
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=25,
                          check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr


def test_threads_using_the_names_for_the_first_time_at_once_all_get_them() -> None:
    # Before: about 1 run in 10 failed with "cannot import name 'ChannelReader' from partially initialized module
    # 'iii.channels'" (two threads importing the SDK at once by different routes).
    script = textwrap.dedent("""
        import threading
        import iii_channels as package
        names = list(package.__all__)
        errors = []
        start = threading.Barrier(16)
        def use(i):
            start.wait()
            for name in (names if i % 2 else names[::-1]):
                try:
                    getattr(package, name)
                except Exception as exc:
                    errors.append(f"{name}: {exc!r}")
        threads = [threading.Thread(target=use, args=(i,)) for i in range(16)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print(errors[:2] or "ok")
    """)
    for _ in range(12):
        done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=25,
                              check=False)
        assert (done.returncode, done.stdout.strip()) == (0, "ok"), (done.stdout, done.stderr[-2000:])


@pytest.mark.parametrize("package", ["iii_engine", "iii_channels", "iii_streams"])
def test_type_checkers_see_no_module_getattr(package: str) -> None:
    # A module-level __getattr__ tells mypy that every attribute exists: `from iii_channels import sinkk` passed.
    import ast

    tree = ast.parse((ROOT / package / "__init__.py").read_text())
    top = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert "__getattr__" not in top
    guarded = [node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "not TYPE_CHECKING"]
    assert any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for g in guarded for n in g.body)


def test_a_thread_importing_a_submodule_and_one_using_the_package_never_wait_for_each_other() -> None:
    # One package-wide lock around the lazy imports (3b07060) hung this forever: a thread importing iii_engine.engine
    # (which runs `from . import closing`, through the package's __getattr__) against one asking the package for
    # Engine (the lock held, waiting for the module the first was importing); the import system's own locks, which
    # detect deadlocks, serialize it instead.
    script = textwrap.dedent("""
        import os, sys, threading, time
        import iii_engine
        done = {}
        def submodule():
            from iii_engine.engine import Engine  # noqa: F401
            done["submodule"] = True
        def package(delay):
            time.sleep(delay)
            iii_engine.Engine
            done["package"] = True
        delay = float(sys.argv[1])
        threads = [threading.Thread(target=submodule, daemon=True),
                   threading.Thread(target=package, args=(delay,), daemon=True)]
        [t.start() for t in threads]
        [t.join(8) for t in threads]
        print("ok" if len(done) == 2 else f"hung: {done}", flush=True)
        os._exit(0)
    """)
    for delay in ("0", "0.01", "0.05"):
        done = subprocess.run([sys.executable, "-c", script, delay], cwd=ROOT, capture_output=True, text=True,
                              timeout=25, check=False)
        assert done.stdout.strip() == "ok", (delay, done.stdout, done.stderr[-2000:])


@pytest.mark.parametrize("package", ["iii", "iii_engine", "iii_streams", "iii_channels"])
def test_a_name_looked_up_on_the_package_is_never_the_first_import_of_importlib(package: str) -> None:
    # On CPython 3.11 a thread importing importlib for the first time while another imports importlib.machinery (as
    # inspect does) left importlib with a bootstrap module never set up: both threads of the test above then failed
    # with "NameError: name 'sys' is not defined" (its CI run, 1 in 450 runs of it on a loaded machine). The package
    # lookups are a process's usual first lazy import, so they must not be the ones that import importlib.
    script = textwrap.dedent("""
        import json, sys, traceback
        first = []
        def hook(event, args):
            if event == "import" and args[0] == "importlib" and not first:
                first.append(traceback.extract_stack()[-2].filename)
        sys.addaudithook(hook)
        package = __import__(sys.argv[1])
        package.__version__
        dir(package)
        print(json.dumps(first))
    """)
    done = subprocess.run([sys.executable, "-c", script, package], cwd=ROOT, capture_output=True, text=True,
                          timeout=25, check=True)
    (importer,) = json.loads(done.stdout)
    assert importer.replace("\\", "/").rsplit("/", 2)[-2:] not in (
        [package, "__init__.py"], ["iii", "_lazy.py"]), importer
