"""The SDK package ``iii`` loads its names on first use: ``import iii`` imports none of its modules (a thread whose
first import is one of them could otherwise meet one running ``iii/__init__``: CPython gh-83065, see
test_concurrent_first_imports.py), and every public name, ``__version__`` and each module as an attribute still
come on demand. A mix with the published ``iii-sdk`` is still refused at the package's import, or at the latest at
its first name.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import iii

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(30)


def _fresh(code: str) -> str:
    """What ``code`` prints in a new interpreter started in the source tree."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=25, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_import_iii_imports_none_of_its_modules() -> None:
    loaded = _fresh("""
        import sys, iii
        print(sorted(name for name in sys.modules if name.split(".")[0] == "iii"))
    """)
    assert loaded == "['iii']"


def test_public_names_version_and_modules_load_on_first_use() -> None:
    from iii import _version, errors, utils
    from iii import iii as client

    assert iii.III is client.III
    assert iii.InvocationError is errors.InvocationError
    assert iii.__version__ == _version.__version__
    assert iii.http is utils.http
    assert callable(iii.telemetry.runtime)
    assert iii.protocol.__name__ == "iii.protocol"


def test_star_import_gets_every_public_name() -> None:
    namespace: dict[str, object] = {}
    exec("from iii import *", namespace)
    assert sorted(set(namespace) - {"__builtins__"}) == sorted(iii.__all__)
    assert namespace["register_worker"] is iii.register_worker


def test_dir_lists_public_names_version_and_modules() -> None:
    listed = dir(iii)
    assert set(iii.__all__) <= set(listed)
    assert {"__version__", "telemetry", "errors", "protocol", "iii"} <= set(listed)
    assert "_version" not in listed


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'iii' has no attribute 'no_such_name'"):
        _ = iii.no_such_name
    assert not hasattr(iii, "_private")


def test_a_module_imported_first_beside_the_published_sdk_is_refused(tmp_path: Path) -> None:
    # iii.iii_types imports no module that checks; the package, imported first, looks at sys.path.
    info = tmp_path / "iii_sdk-0.10.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: iii-sdk\nVersion: 0.10.0\n")
    said = _fresh(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        try:
            from iii.iii_types import WorkerInfo
        except ImportError as exc:
            print(exc)
    """)
    assert said.startswith("iii-sdk 0.10.0 (the published SDK"), said
    assert "pip uninstall iii-sdk" in said


def test_the_published_sdk_check_runs_before_the_first_name() -> None:
    # A published SDK the quick look at sys.path misses (here only importlib.metadata is told of it): `_version`
    # imports no module that checks, and the lookup still refuses the mix.
    said = _fresh("""
        import importlib.metadata as metadata
        real = metadata.distribution
        class Published:
            version = "0.10.0"
            def locate_file(self, path):
                return "/nowhere/site-packages"
        metadata.distribution = lambda name: Published() if name == "iii-sdk" else real(name)
        import iii
        try:
            iii.__version__
        except ImportError as exc:
            print(exc)
    """)
    assert "iii-sdk 0.10.0 (the published SDK" in said
    assert "pip uninstall iii-sdk" in said
