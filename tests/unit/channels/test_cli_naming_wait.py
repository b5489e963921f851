"""``iii-channel`` waits for the engine to name a connection as long as the SDK waits before warning that it was
never named: one public constant, :data:`iii.iii.UNNAMED_WARN_S`, not a private name of the SDK's.

Before: the CLI imported ``iii.iii._UNNAMED_WARN_S``; ``UNNAMED_WARN_S`` did not exist.
"""

from __future__ import annotations

import ast
from pathlib import Path

import iii.iii as iii_module
from iii_channels import cli


def test_the_naming_wait_is_the_sdks_public_constant() -> None:
    assert iii_module.UNNAMED_WARN_S == 5.0
    assert cli._NAMING_S == iii_module.UNNAMED_WARN_S


def test_the_cli_imports_no_private_name_of_the_sdk_client() -> None:
    tree = ast.parse(Path(cli.__file__).read_text(encoding="utf-8"))
    private = [alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "iii.iii"
               for alias in node.names if alias.name.startswith("_")]
    assert private == []
