"""Packaging metadata (issue #11): every imported third-party package is declared where it is needed, the
version has one source, the licence is declared and shipped, the changelog and typing markers exist."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import re
import sys
import tomllib

import pytest

import iii._version as version_module
from iii_streams.messages import EXTRAS
from tests.packaging.helpers import ROOT

PACKAGES = ("iii", "iii_engine", "iii_streams", "iii_channels")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
# imported directly, installed by a declared dependency that pins its exact version (pydantic pins pydantic-core)
PROVIDED_BY = {"pydantic_core": "pydantic"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(requirements: list[str]) -> set[str]:
    return {_normal(re.split(r"[\[<>=!~;\s]", r, maxsplit=1)[0]) for r in requirements}


def declared(group: str) -> set[str]:
    """The distributions a group declares: ``base`` or an extra (an extra naming other extras includes them)."""
    if group == "base":
        return _requirement_names(PYPROJECT["dependencies"])
    names: set[str] = set()
    for requirement in PYPROJECT["optional-dependencies"][group]:
        if (found := re.fullmatch(r"iii-toolkit\[(.+)\]", requirement)) is not None:
            for extra in found.group(1).split(","):
                names |= declared(extra.strip())
        else:
            names |= _requirement_names([requirement])
    return names


def third_party_imports() -> dict[str, list[str]]:
    """Top-level third-party modules imported anywhere in the four packages -> the files importing them."""
    found: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                           else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                           else [])
                for module in modules:
                    top = module.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in PACKAGES:
                        found.setdefault(top, []).append(str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared() -> None:
    everything = declared("base") | set().union(*(declared(e) for e in PYPROJECT["optional-dependencies"]))
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for module, files in sorted(third_party_imports().items()):
        owners = {_normal(d) for d in distributions.get(module, [])}
        if PROVIDED_BY.get(module) in everything:
            continue
        if not owners & everything:
            missing.append(f"{module} (distribution {sorted(owners) or '?'}) imported by {files[0]}")
    assert not missing, f"imported but declared nowhere in pyproject.toml: {missing}"


def test_the_import_scan_sees_what_it_must() -> None:
    # the scan itself: the packages the issue names are found (multidict and yarl once came only via aiohttp)
    assert {"multidict", "yarl", "aiohttp", "redis", "sqlalchemy", "pytest_asyncio"} <= set(third_party_imports())


@pytest.mark.parametrize(("module", "extra"), sorted(EXTRAS.items()))
def test_the_extra_named_in_errors_installs_the_package(module: str, extra: str) -> None:
    distributions = {_normal(d) for d in importlib.metadata.packages_distributions().get(module, [])}
    assert distributions & declared(extra), f"{module}: the message says iii-toolkit[{extra}], which lacks it"


def test_version_is_the_installed_metadata() -> None:
    expected = importlib.metadata.version("iii-toolkit")
    assert [importlib.import_module(p).__version__ for p in PACKAGES] == [expected] * 4
    assert expected == PYPROJECT["version"]


def test_version_falls_back_to_pyproject_in_a_source_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(version_module, "version", not_installed)
    assert version_module.toolkit_version() == PYPROJECT["version"]
    monkeypatch.setattr(version_module, "_PYPROJECT", ROOT / "no-such-pyproject.toml")
    assert version_module.toolkit_version() == "0+unknown"


def test_license_is_declared_and_shipped() -> None:
    assert PYPROJECT["license"] == "MIT" and PYPROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "the iii toolkit authors" in text
    # PEP 639: with a licence expression, licence classifiers are not allowed
    assert not [c for c in PYPROJECT["classifiers"] if c.startswith("License ::")]


def test_metadata_is_complete() -> None:
    for field in ("readme", "requires-python", "keywords", "classifiers", "description"):
        assert PYPROJECT.get(field), f"pyproject.toml [project] lacks {field}"
    assert "Typing :: Typed" in PYPROJECT["classifiers"]
    tools = {r.split("==")[0]: r for r in PYPROJECT["optional-dependencies"]["dev"]}
    assert "==" in tools["ruff"] and "==" in tools["mypy"], "CI's ruff and mypy must be pinned"
    assert all("==" in r for r in PYPROJECT["optional-dependencies"]["docs"]), "the docs tools must be pinned"


def test_changelog_follows_keep_a_changelog() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in text
    assert re.search(rf"^## \[{re.escape(PYPROJECT['version'])}\] - \d{{4}}-\d{{2}}-\d{{2}}$", text, re.M)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_is_typed(package: str) -> None:
    assert (ROOT / package / "py.typed").is_file()
