#!/usr/bin/env bash
# Installs everything (idempotent) and runs the whole test suite: lint, types, unit, integration, interop.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-reference
bash scripts/services.sh
export III_REF_PYTHON="$PWD/.ref-venv/bin/python"
echo "== ruff";  .venv/bin/ruff check iii iii_engine iii_streams iii_channels tests bench examples
echo "== mypy --strict"; .venv/bin/mypy
echo "== pytest"; .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
