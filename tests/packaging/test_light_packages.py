"""``import iii_engine`` / ``iii_channels`` / ``iii_streams`` and their ``__main__`` load none of the toolkit (its
names load on first use, so a console script can catch a Ctrl-C before the heavy imports), while every public
name stays importable as before, ``dir()`` lists them and ``iii_channels.sink`` / ``.source`` stay the functions
once their submodules are imported."""

from __future__ import annotations

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
