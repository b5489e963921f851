"""Every public exception class of iii, iii_channels, iii_streams and iii_engine survives a pickle round trip (how
it crosses process boundaries: multiprocessing, ``concurrent.futures.ProcessPoolExecutor``) with its type, its
``str()`` and its attributes.

Python rebuilds an exception as ``type(exc)(*exc.args)``. Before, a class whose constructor takes other parameters
than the message it passes on failed to unpickle (``IncompleteReadError``, ``ModuleStartError``, ``StoreFull``: a
``TypeError`` for the missing arguments, which a process pool reports instead of the error) or came back with its
message built twice (``LimitExceededError``: "stream exceeds the limit of stream exceeds the limit of 4 bytes
bytes").
"""

from __future__ import annotations

import importlib
import inspect
import json
import pickle
import subprocess
import sys
from typing import Any

import pytest

from iii.errors import PicklesByState

_PACKAGES = ("iii", "iii_channels", "iii_streams", "iii_engine")

# Every module of the packages is imported in a process of its own (some are command-line entry points, some load
# optional parts): only the modules defining an exception class are imported here.
_LIST = f"""
import importlib, inspect, json, pkgutil
found = []
for package in {_PACKAGES!r}:
    names = [package] + [m.name for m in pkgutil.walk_packages(importlib.import_module(package).__path__,
                                                               package + ".")]
    for name in names:
        if any(part.startswith("_") for part in name.split(".")[1:]):
            continue
        for attr, obj in vars(importlib.import_module(name)).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == name
                    and not attr.startswith("_")):
                found.append([name, attr])
print(json.dumps(found))
"""


def _public_exception_classes() -> list[tuple[str, str]]:
    listed = subprocess.run([sys.executable, "-c", _LIST], capture_output=True, text=True, check=True, timeout=60)
    return [(module, name) for module, name in json.loads(listed.stdout)]


# A value for each constructor parameter, by its annotation (the first that the annotation starts with).
_BY_ANNOTATION: dict[str, Any] = {
    "bytes": b"ab",
    "int": 4,
    "float": 1.5,
    "bool": True,
    "BaseException | str": OSError(98, "Address already in use"),
    "Sequence[str]": ["tar", "-x"],
}
_BY_NAME: dict[tuple[str, str], Any] = {("EventLoopUnavailable", "name"): "uvloop"}  # a known loop's name
_KNOWN_FAILING: set[str] = set()  # classes still failing, each marked xfail(strict): none


def _argument(cls: type[BaseException], parameter: inspect.Parameter) -> Any:
    if (cls.__name__, parameter.name) in _BY_NAME:
        return _BY_NAME[cls.__name__, parameter.name]
    annotation = str(parameter.annotation)
    for prefix, value in _BY_ANNOTATION.items():
        if annotation.startswith(prefix):
            return value
    return f"the {parameter.name}"


def _example(cls: type[BaseException]) -> BaseException:
    """An instance of ``cls`` built as its raisers build it: every parameter given (keyword-only ones too)."""
    if "__init__" not in {name for klass in cls.__mro__ if klass.__module__ != "builtins" for name in vars(klass)}:
        return cls("what went wrong")
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for parameter in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if parameter.kind is parameter.KEYWORD_ONLY:
            kwargs[parameter.name] = _argument(cls, parameter)
        elif parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            args.append(_argument(cls, parameter))
    return cls(*args, **kwargs)


def _attributes(exc: BaseException) -> dict[str, Any]:
    attributes = {name: repr(value) for name, value in vars(exc).items()}  # repr: an OSError cause compares so
    if isinstance(exc, ImportError):
        attributes.update(name=exc.name, path=exc.path)
    return attributes


def _params() -> list[Any]:
    return [pytest.param(module, name, id=f"{module}.{name}",
                         marks=[pytest.mark.xfail(strict=True)] if f"{module}.{name}" in _KNOWN_FAILING else [])
            for module, name in _public_exception_classes()]


def test_the_classes_are_found() -> None:
    found = {f"{module}.{name}" for module, name in _public_exception_classes()}
    assert {"iii_channels.errors.IncompleteReadError", "iii_engine.modules.base.ModuleStartError",
            "iii.channels.LimitExceededError", "iii_streams.errors.StreamClosedError"} <= found


@pytest.mark.parametrize(("module", "name"), _params())
def test_an_exception_survives_a_pickle_round_trip(module: str, name: str) -> None:
    cls = getattr(importlib.import_module(module), name)
    exc = _example(cls)
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls
    assert str(back) == str(exc)
    assert back.args == exc.args
    assert _attributes(back) == _attributes(exc)


class _Unreachable(PicklesByState, ConnectionError):
    def __init__(self, host: str) -> None:
        super().__init__(2, f"cannot reach {host}")
        self.host = host


class _Group(PicklesByState, ExceptionGroup):  # type: ignore[type-arg]
    pass


class _Exit(PicklesByState, SystemExit):
    pass


class _OwnState(PicklesByState, Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}-{b}")
        self.a = a

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.restored = True


def test_user_subclasses_keep_the_state_builtins_keep_outside_their_dict() -> None:
    # Before: errno/strerror came back None (and str() changed), an exception group failed to unpickle
    # (BaseExceptionGroup.__new__ takes 2 arguments), SystemExit.code was lost, a class's own __setstate__ skipped.
    back = pickle.loads(pickle.dumps(_Unreachable("db")))
    assert (back.errno, back.strerror, back.host) == (2, "cannot reach db", "db")
    assert str(back) == "[Errno 2] cannot reach db"
    group = pickle.loads(pickle.dumps(_Group("several", [ValueError(1)])))
    assert type(group) is _Group and str(group) == "several (1 sub-exception)"
    assert [repr(e) for e in group.exceptions] == ["ValueError(1)"]
    assert pickle.loads(pickle.dumps(_Exit(3))).code == 3
    own = pickle.loads(pickle.dumps(_OwnState(1, 2)))
    assert (str(own), own.a, own.restored) == ("1-2", 1, True)
