"""Issue #8: the published ``iii-sdk`` installed next to this distribution (both own the ``iii`` package) is
refused at import with one clear ImportError, and normal use of either environment is left alone.

The mix is faked with a directory holding only ``iii_sdk-0.10.0.dist-info/METADATA`` put first on the path of a
fresh interpreter: that is all ``importlib.metadata`` (and pip) look at to call a distribution installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import reference_python

ROOT = Path(__file__).resolve().parents[3]


def _run(python: str, code: str, extra_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["OTEL_ENABLED"] = "false"
    if extra_path is not None:
        env["PYTHONPATH"] = str(extra_path)
    return subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, cwd="/", timeout=25,
                          check=False)


@pytest.fixture
def published_sdk(tmp_path: Path) -> Path:
    info = tmp_path / "iii_sdk-0.10.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: iii-sdk\nVersion: 0.10.0\n")
    return tmp_path


# ``iii_channels`` loads its names on first use (a console script must be able to catch a Ctrl-C while they load), so
# the refusal comes with its first name, not with ``import iii_channels`` alone.
@pytest.mark.parametrize("statement", ["import iii", "import iii.iii", "from iii_channels import sink"])
def test_importing_next_to_the_published_sdk_raises_one_clear_import_error(published_sdk: Path, statement: str) -> None:
    proc = _run(sys.executable, statement, published_sdk)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: "), proc.stderr[-2000:]
    assert "iii-sdk 0.10.0" in last and str(published_sdk) in last
    assert "pip uninstall iii-sdk" in last and "iii-toolkit" in last


def test_files_in_the_same_place_are_reported_as_overwritten(published_sdk: Path) -> None:
    # Our packages next to the dist-info, as pip leaves them when both were installed into one site-packages.
    for package in ("iii", "iii_channels"):
        (published_sdk / package).symlink_to(ROOT / package)
    proc = _run(sys.executable, "from iii_channels import sink", published_sdk)
    last = proc.stderr.strip().splitlines()[-1]
    assert "the same place as iii-toolkit" in last and "overwrites" in last, proc.stderr[-2000:]
    assert "pip uninstall iii-sdk" in last and "pip install --force-reinstall -e '.[all]'" in last


def test_a_shadowed_published_sdk_is_explained(published_sdk: Path) -> None:
    proc = _run(sys.executable, "import iii", published_sdk)
    last = proc.stderr.strip().splitlines()[-1]
    assert f"found iii-toolkit's package in {ROOT / 'iii'}" in last and "-P" in last, proc.stderr[-2000:]


def test_the_check_names_the_conflict_in_the_exception_object(published_sdk: Path) -> None:
    code = "try:\n import iii\nexcept ImportError as e:\n print(type(e).__name__, e.name)\n"
    proc = _run(sys.executable, code, published_sdk)
    assert proc.stdout.split() == ["ImportError", "iii"], proc.stderr[-2000:]


def test_our_environment_imports_normally() -> None:
    proc = _run(sys.executable, "import iii, iii_channels; print(iii.__file__)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(ROOT / "iii" / "__init__.py")


def test_the_reference_environment_imports_normally() -> None:
    python = reference_python()
    proc = _run(python, "import iii; print(iii.__file__); iii.InitOptions()")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "site-packages" in proc.stdout and str(ROOT / "iii") not in proc.stdout
