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
        from iii._lazy import attribute

        return attribute(globals(), _FROM, name)

    def __dir__() -> list[str]:
        from iii._lazy import names

        return names(globals(), _FROM)


del TYPE_CHECKING
