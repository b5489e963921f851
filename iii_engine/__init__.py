"""The embedded iii engine: wire-compatible with the production engine 0.10, usable in-process or as a CLI.

Example:
    >>> async def main() -> None:  # doctest: +SKIP
    ...     async with Engine(port=0) as engine:
    ...         print(engine.url)
"""

from iii._version import __version__ as __version__

from .config import ConfigError, EngineConfig, load_config, parse_config
from .engine import Engine
from .modules.base import EngineStartError, ModuleSpec, ModuleStartError

__all__ = ["ConfigError", "Engine", "EngineConfig", "EngineStartError", "ModuleSpec", "ModuleStartError", "load_config",
           "parse_config"]
