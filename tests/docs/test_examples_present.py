"""Every public function and method of iii_streams and iii_channels shows a ``>>>`` example in its own docstring.

The public API is what each package and each of its public modules exports: ``__all__`` where a module has one,
else the classes and functions it defines without a leading underscore. Counted: functions, and the methods
(plain, async, class and static) a public class defines itself without a leading underscore. Not counted:
properties (attributes, shown in their class's example), classes themselves, and objects defined outside the
two packages (re-exports such as ``iii_streams.ops``, documented where they live). A docstring inherited from a
base class does not count: ``help()`` on an override shows its own text. The doctest run (scripts/test.sh)
proves that the examples run; this test proves that they exist.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from types import ModuleType

PACKAGES = ("iii_streams", "iii_channels")

# Qualified names (fnmatch patterns) that cannot have a meaningful example of their own.
ALLOWED = {
    # pytest runs these on a subclass bound to a store: the test body is the example, a doctest would repeat it.
    "iii_streams.testing.StreamConformance.test_*",
}


def public_modules(package: str) -> Iterator[ModuleType]:
    """The package and its submodules whose names have no leading underscore."""
    root = importlib.import_module(package)
    yield root
    for info in pkgutil.iter_modules(root.__path__):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{package}.{info.name}")


def exported(module: ModuleType) -> list[object]:
    """What ``module`` exports: its ``__all__``, else the classes and functions it defines publicly."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [name for name, obj in vars(module).items() if not name.startswith("_")
                 and (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ == module.__name__]
    return [getattr(module, name) for name in names]


def public_callables(package: str) -> dict[str, object]:
    """Qualified name -> function of every public function and method defined in ``package``."""
    found: dict[str, object] = {}
    for module in public_modules(package):
        for obj in exported(module):
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if (obj.__module__ or "").partition(".")[0] != package:
                continue
            qualname = f"{obj.__module__}.{obj.__qualname__}"
            if inspect.isfunction(obj):
                found[qualname] = obj
                continue
            for name, attr in vars(obj).items():
                function = attr.__func__ if isinstance(attr, (classmethod, staticmethod)) else attr
                if not name.startswith("_") and inspect.isfunction(function):
                    found[f"{qualname}.{name}"] = function
    return found


def missing_examples() -> list[str]:
    """Qualified names of the public functions and methods whose own docstring has no ``>>>`` line."""
    missing = []
    for package in PACKAGES:
        for qualname, function in public_callables(package).items():
            doc = function.__doc__ or ""
            has_example = any(line.lstrip().startswith(">>>") for line in doc.splitlines())
            if not has_example and not any(fnmatch.fnmatchcase(qualname, p) for p in ALLOWED):
                missing.append(qualname)
    return sorted(missing)


def test_walk_finds_the_api() -> None:
    # Guards the walk itself: an import or filter mistake would otherwise make the test below pass vacuously.
    found = {name for package in PACKAGES for name in public_callables(package)}
    for expected in ("iii_streams.memory.MemoryStream.aclose", "iii_streams.sql.SQLStream.get",
                     "iii_streams.redis.RedisStream.watch", "iii_channels.source.ChannelSource.read",
                     "iii_channels.sink.ChannelSink.write", "iii_channels.pipes.copy", "iii_streams.urls.open_stream"):
        assert expected in found
    assert len(found) > 100


def test_allow_list_entries_still_match() -> None:
    found = {name for package in PACKAGES for name in public_callables(package)}
    stale = [pattern for pattern in ALLOWED if not fnmatch.filter(found, pattern)]
    assert not stale, f"allow-list entries matching nothing: {stale}"


def test_every_public_function_and_method_has_an_example() -> None:
    missing = missing_examples()
    assert not missing, f"{len(missing)} public functions/methods without a >>> example:\n  " + "\n  ".join(missing)
