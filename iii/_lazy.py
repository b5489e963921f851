"""Names of a package loaded on first use (PEP 562), for ``iii`` and the toolkit's other packages.

Each package keeps a table of its public names and the module that defines each; its ``__getattr__`` and ``__dir__``
call :func:`attribute` and :func:`names` here.

Nothing here imports ``importlib``. On CPython 3.11, a thread importing ``importlib`` for the first time while another
thread imports one of its submodules (``inspect`` imports ``importlib.machinery``) can leave ``importlib`` holding a
copy of its bootstrap module that was never set up, and every later ``importlib.import_module`` then fails with
``NameError: name 'sys' is not defined``. A package attribute is often a process's first lazy import, so it goes
through the ``__import__`` built-in instead, which needs no Python module at all.

This module imports nothing, and the ``iii`` package imports it only inside its ``__getattr__``: a thread whose first
import is a module of a package holds that module's lock while it imports the package, so a package that imported
one of its own modules at its top could deadlock with it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping
    from types import ModuleType


def submodule(module: str, package: str) -> ModuleType:
    """Import ``module`` and return it, as ``importlib.import_module(module, package)`` does.

    ``module`` is absolute (``"iii._version"``) or relative to ``package`` (``".errors"``, ``".modules.base"``).

    Example:
        >>> submodule(".errors", "iii").__name__
        'iii.errors'
        >>> submodule("iii._version", "iii_engine").__name__
        'iii._version'
    """
    name = module.lstrip(".")
    level = len(module) - len(name)
    # With a fromlist, __import__ returns the module named rather than its top package. Every module has the
    # attribute ``__name__``, so this fromlist never makes it import a submodule of that name.
    loaded: ModuleType = __import__(name, {"__name__": package, "__package__": package}, None, ("__name__",), level)
    return loaded


def attribute(package: MutableMapping[str, object], table: Mapping[str, str], name: str) -> object:
    """The package's attribute ``name``, for its ``__getattr__``.

    A name in ``table`` is imported from the module it maps to and kept in ``package`` (the package's globals), so
    the next lookup does not come here. Any other name is taken as a submodule (importing a package used to import
    them all). A name that is neither raises ``AttributeError``; a missing dependency of a module that exists raises
    its own ``ModuleNotFoundError``, naming that dependency.

    No lock of ours is held around the import: the import system's own locks detect deadlocks, one of ours would not.

    Example:
        >>> space = {"__name__": "iii"}
        >>> attribute(space, {"IIIError": ".errors"}, "IIIError").__name__
        'IIIError'
        >>> "IIIError" in space
        True
        >>> attribute(space, {}, "no_such_part")
        Traceback (most recent call last):
        ...
        AttributeError: module 'iii' has no attribute 'no_such_part'
    """
    package_name = str(package["__name__"])
    module = table.get(name)
    if module is None:
        if name.startswith("_"):
            raise AttributeError(f"module {package_name!r} has no attribute {name!r}")
        module = "." + name
    try:
        loaded = submodule(module, package_name)
    except ModuleNotFoundError as exc:
        if name in table or exc.name != f"{package_name}.{name}":
            raise
        raise AttributeError(f"module {package_name!r} has no attribute {name!r}") from None
    if name not in table:
        return loaded
    value = package[name] = getattr(loaded, name)
    return value


def names(package: Mapping[str, object], table: Mapping[str, str]) -> list[str]:
    """The package's names, for its ``__dir__``: what it holds, what ``table`` lists, and its public submodules.

    Example:
        >>> import iii
        >>> {"IIIError", "errors", "__name__"} <= set(names(vars(iii), {"IIIError": ".errors"}))
        True
    """
    from pkgutil import iter_modules

    path = package["__path__"]
    submodules = {info.name for info in iter_modules(path) if not info.name.startswith("_")}  # type: ignore[arg-type]
    held = (n for n in package if not n.startswith("_") or n.startswith("__"))
    return sorted({*held, *table, *submodules})


del TYPE_CHECKING
