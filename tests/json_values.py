"""JSON values of a given shape for tests.

Example::

    nested(2)  # [["leaf"]]
"""

from __future__ import annotations

from typing import Any


def nested(levels: int, leaf: Any = "leaf") -> Any:
    """``leaf`` inside ``levels`` lists: a value nesting ``levels`` lists deep (a scalar leaf adds none)."""
    value = leaf
    for _ in range(levels):
        value = [value]
    return value
