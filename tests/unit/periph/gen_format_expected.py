"""Regenerate ``format_expected.json`` from the reference SDK (run with the reference interpreter).

Usage:
    /tmp/ref/venv/bin/python tests/unit/periph/gen_format_expected.py
"""

from __future__ import annotations

import json
import pathlib

from format_cases import CASES  # type: ignore[import-not-found]

from iii.format_utils import python_type_to_format  # the reference SDK when run as documented

out = {name: python_type_to_format(annotation) for name, annotation in CASES.items()}
path = pathlib.Path(__file__).with_name("format_expected.json")
path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
print(f"wrote {len(out)} cases to {path}")
