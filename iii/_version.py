"""The toolkit's version: one number for the four packages of the ``iii-toolkit`` distribution.

Read from the installed distribution's metadata; a source tree that was never installed falls back to the
version its ``pyproject.toml`` declares (``0+unknown`` when even that cannot be read).

Example:
    >>> import re
    >>> bool(re.fullmatch(r"\\d+\\.\\d+\\.\\d+\\S*", toolkit_version()))
    True
"""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Final

__all__ = ["DISTRIBUTION", "__version__", "toolkit_version"]

DISTRIBUTION: Final = "iii-toolkit"
# next to the packages in a checkout (iii/../pyproject.toml); an installed wheel has metadata instead
_PYPROJECT: Final = Path(__file__).resolve().parents[1] / "pyproject.toml"


def toolkit_version() -> str:
    """The installed ``iii-toolkit`` version, else the source tree's declared one, else ``0+unknown``.

    Example:
        >>> toolkit_version() != ""
        True
    """
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        pass
    try:
        with _PYPROJECT.open("rb") as file:
            project = tomllib.load(file).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return "0+unknown"
    declared = project.get("version") if project.get("name") == DISTRIBUTION else None
    return declared if isinstance(declared, str) else "0+unknown"


__version__: Final = toolkit_version()
