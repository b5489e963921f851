"""Production module class names -> our module classes, imported only when a configuration asks for them.

Each of our module files defines one :class:`EngineModule` subclass whose ``class_names`` lists the production
names it stands for; the catalogue only records which file to look in, so module authors choose their own class
names. Unknown or not yet implemented modules raise :class:`ModuleUnavailable`: a configured module the engine
cannot load stops its start-up (``ModuleStartError``) unless degraded start is allowed, when it is reported once
as "not available".

Example:
    >>> resolve("modules::nothing::Here")
    Traceback (most recent call last):
    ...
    iii_engine.modules.catalogue.ModuleUnavailable: unknown module class 'modules::nothing::Here'
    >>> resolve("modules::stream::StreamModul")
    Traceback (most recent call last):
    ...
    iii_engine.modules.catalogue.ModuleUnavailable: unknown module class 'modules::stream::StreamModul' \
(did you mean 'modules::stream::StreamModule'?)
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Final

from iii_streams.messages import error_line

from .base import EngineModule, ModuleSpec

WORKER_MODULE: Final = "modules::worker::WorkerModule"

# production class name -> the file (under iii_engine/modules) that defines our module class
CATALOGUE: Final[dict[str, str]] = {
    "modules::stream::StreamModule": "stream.module",
    "modules::state::StateModule": "state.module",
    "modules::queue::QueueModule": "queue.module",
    "modules::api::RestApiModule": "http.api",
    "modules::pubsub::PubSubModule": "pubsub.module",
    "modules::cron::CronModule": "cron.module",
    "modules::http_functions::HttpFunctionsModule": "http.functions",
    "modules::observability::OtelModule": "observability.module",
    "modules::bridge_client::BridgeClientModule": "bridge.client",
}

# What production loads when the configuration has no ``modules:`` list (the worker module is always loaded).
DEFAULT_MODULES: Final[tuple[str, ...]] = (
    "modules::stream::StreamModule",
    "modules::state::StateModule",
    "modules::queue::QueueModule",
    "modules::api::RestApiModule",
    "modules::pubsub::PubSubModule",
    "modules::cron::CronModule",
)


class ModuleUnavailable(LookupError):
    """A configured module class this engine cannot load; the message says why."""


def default_specs() -> list[ModuleSpec]:
    """The default module set, with empty settings."""
    return [ModuleSpec(class_name=name) for name in DEFAULT_MODULES]


def resolve(class_name: str) -> type[EngineModule]:
    """Our :class:`EngineModule` subclass for a production class name."""
    file = CATALOGUE.get(class_name)
    if file is None:
        near = difflib.get_close_matches(class_name, list(CATALOGUE), n=1, cutoff=0.8)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ModuleUnavailable(f"unknown module class {class_name!r}{hint}")
    try:
        module = importlib.import_module(f"iii_engine.modules.{file}")
    except ModuleNotFoundError as exc:
        path = f"iii_engine.modules.{file}"
        if exc.name is not None and exc.name.startswith("iii_engine.modules.") and path.startswith(exc.name):
            raise ModuleUnavailable(f"{class_name} is not implemented yet") from None
        raise ModuleUnavailable(f"{class_name} needs a {error_line(exc)}") from None  # names the extra
    for _, candidate in inspect.getmembers(module, inspect.isclass):
        if (issubclass(candidate, EngineModule) and not inspect.isabstract(candidate)
                and class_name in getattr(candidate, "class_names", ())):
            return candidate
    raise ModuleUnavailable(f"iii_engine/modules/{file.replace('.', '/')}.py defines no module for {class_name}")
