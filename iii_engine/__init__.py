"""The embedded iii engine: wire-compatible with the production engine 0.10, usable in-process or as a CLI.

Example:
    >>> async def main() -> None:  # doctest: +SKIP
    ...     async with Engine(port=0) as engine:
    ...         print(engine.url)
"""


# Each public name is imported on first use (PEP 562): ``iii-engine`` imports this package before it can handle a
# Ctrl-C, and the engine's imports take a few hundred milliseconds. Not ``typing.TYPE_CHECKING``: ``typing`` alone
# takes milliseconds to import; type checkers read this name as that one.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from iii._version import __version__ as __version__

    from .config import ConfigError, EngineConfig, load_config, parse_config
    from .engine import Engine
    from .modules.base import EngineStartError, ModuleSpec, ModuleStartError

__all__ = ["ConfigError", "Engine", "EngineConfig", "EngineStartError", "ModuleSpec", "ModuleStartError", "load_config",
           "parse_config"]

_FROM = {"__version__": "iii._version", "ConfigError": ".config", "EngineConfig": ".config",
         "load_config": ".config", "parse_config": ".config", "Engine": ".engine", "EngineStartError": ".modules.base",
         "ModuleSpec": ".modules.base", "ModuleStartError": ".modules.base"}


if not TYPE_CHECKING:  # a type checker reads the imports above; a __getattr__ would tell it that every name exists

    def __getattr__(name: str) -> object:
        module = _FROM.get(name)
        if module is None:
            if name.startswith("_"):
                raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
            module = "." + name  # a submodule, as an attribute: importing the package used to import them all
        from importlib import import_module  # here: it imports warnings, time in which the CLI cannot catch a Ctrl-C

        # No lock of our own around the import: the import system's locks detect deadlocks, one of ours would not.
        try:
            loaded = import_module(module, __name__)
        except ModuleNotFoundError as exc:
            if name in _FROM or exc.name != f"{__name__}.{name}":
                raise  # (a missing dependency of a module that exists is named as it is)
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        if name not in _FROM:
            return loaded
        value = globals()[name] = getattr(loaded, name)
        return value

    def __dir__() -> list[str]:
        from pkgutil import iter_modules

        submodules = {info.name for info in iter_modules(__path__) if not info.name.startswith("_")}
        return sorted({*(n for n in globals() if not n.startswith("_") or n.startswith("__")), *_FROM, *submodules})


del TYPE_CHECKING
