"""What a worker tells the engine about itself right after connecting (``engine::workers::register``).

Example:
    >>> from iii.iii_constants import InitOptions
    >>> meta = worker_metadata(InitOptions(worker_name="billing"))
    >>> (meta["runtime"], meta["name"], sorted(meta["telemetry"]))
    ('python', 'billing', ['amplitude_api_key', 'framework', 'language', 'project_name'])
"""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .iii_constants import InitOptions

__all__ = ["sdk_version", "worker_metadata"]


def sdk_version() -> str:
    """The installed distribution's version, or ``"unknown"``.

    Example:
        >>> isinstance(sdk_version(), str)
        True
    """
    try:
        return version("iii-toolkit")
    except PackageNotFoundError:
        return "unknown"


def worker_metadata(options: InitOptions) -> dict[str, Any]:
    """The ``data`` of the registration call, as the reference SDK sends it
    (docs/protocol.md#reference-sdk-differences).

    ``name`` defaults to ``<hostname>:<pid>``; ``telemetry.language`` to ``$LANG`` up to the first ``.``.

    Example:
        >>> worker_metadata(InitOptions())["name"].endswith(f":{os.getpid()}")
        True
    """
    tele = options.telemetry
    language = (tele.language if tele else None) or os.environ.get("LANG", "").split(".")[0] or None
    return {
        "runtime": "python",
        "version": sdk_version(),
        "name": options.worker_name or f"{platform.node()}:{os.getpid()}",
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "pid": os.getpid(),
        "telemetry": {
            "language": language,
            "project_name": tele.project_name if tele else None,
            "framework": tele.framework if tele else None,
            "amplitude_api_key": tele.amplitude_api_key if tele else None,
        },
    }
