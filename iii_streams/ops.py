"""Update-op semantics for stream stores: a re-export of :mod:`iii.stream_ops` (the one implementation).

Example:
    >>> apply_ops({}, [{"type": "set", "path": "a", "value": 1}])
    {'a': 1}
"""

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.stream_ops import OP_TYPES, Op, OpType, apply_ops, apply_update, op_to_wire, parse_op, parse_ops, to_model

__all__ = ["OP_TYPES", "Op", "OpType", "apply_ops", "apply_update", "op_to_wire", "parse_op", "parse_ops", "to_model"]
