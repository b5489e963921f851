"""``iii-engine [--host H] [--port P] [--config FILE] [--stream-store URL] [--log-level L]``.

Prints ``iii engine listening on ws://host:port`` on stdout once it accepts workers (tests wait for that line)
and stops cleanly on SIGINT/SIGTERM.

Example:
    >>> parse_args(["--port", "0"]).port
    0
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from collections.abc import Sequence

from .config import DEFAULT_HOST, DEFAULT_PORT, ConfigError, EngineConfig, load_config
from .engine import Engine
from .modules.base import ModuleSpec
from .modules.catalogue import default_specs

READY_PREFIX = "iii engine listening on "


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="iii-engine", description="Run the embedded iii engine.")
    parser.add_argument("--host", default=None, help=f"interface to bind (default {DEFAULT_HOST}; "
                                                      "use 0.0.0.0 for all interfaces)")
    parser.add_argument("--port", type=int, default=None, help=f"worker port (default {DEFAULT_PORT}; 0 = any)")
    parser.add_argument("--config", default=None, help="production-format YAML configuration file")
    parser.add_argument("--stream-store", default=None, metavar="URL",
                        help="the stream module's own store: memory://, redis://…, sqlite+aiosqlite:///…, "
                             "postgresql+asyncpg://… (default: the configured adapter, in memory)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    return parser.parse_args(argv)


def with_stream_store(config: EngineConfig, url: str) -> EngineConfig:
    """``config`` with the stream module's ``store_url`` set to ``url`` (the module is added if missing).

    Example:
        >>> cfg = with_stream_store(EngineConfig(), "memory://")
        >>> [m.config for m in cfg.modules or [] if m.class_name == "modules::stream::StreamModule"]
        [{'store_url': 'memory://'}]
    """
    name = "modules::stream::StreamModule"
    specs = list(config.modules) if config.modules is not None else default_specs()
    if not any(spec.class_name == name for spec in specs):
        specs.append(ModuleSpec(name))
    specs = [ModuleSpec(s.class_name, {**s.config, "store_url": url}) if s.class_name == name else s for s in specs]
    return dataclasses.replace(config, modules=specs)


async def run(config: EngineConfig) -> None:
    """Run an engine until SIGINT/SIGTERM."""
    engine = Engine(config=config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await engine.start()
    try:
        print(f"{READY_PREFIX}{engine.url}", flush=True)
        await stop.wait()
    finally:
        await engine.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config) if args.config else EngineConfig()
    except ConfigError as exc:
        print(f"iii-engine: {exc}", file=sys.stderr)
        return 2
    config = config.with_overrides(host=args.host, port=args.port)
    if args.stream_store:
        config = with_stream_store(config, args.stream_store)
    try:
        asyncio.run(run(config))
    except OSError as exc:
        print(f"iii-engine: cannot listen on {config.host}:{config.port}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0
