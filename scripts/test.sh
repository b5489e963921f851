#!/usr/bin/env bash
# Installs everything (idempotent) and runs the whole test suite: lint, types, unit, integration, interop, the
# doctests of the four packages, the strict docs build and the wheel check (scripts/test-wheel.sh), then unit and
# integration again at the dependency floors (scripts/test-floors.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-reference
bash scripts/services.sh
export III_REF_PYTHON="$PWD/.ref-venv/bin/python"
echo "== ruff";  .venv/bin/ruff check iii iii_engine iii_streams iii_channels tests bench examples
echo "== mypy --strict"; .venv/bin/mypy
# three processes (pytest-xdist), each test file in one of them: most tests wait on sockets, timers and child
# processes, so even on two cores a third process fills their waits (measured on this suite, two cores: 16.0 min with
# two processes, 10.5 min with three, the same tests passing)
echo "== pytest"; .venv/bin/python -m pytest -q -p no:cacheprovider -n 3 --dist loadfile --durations=10 "$@"
echo "== doctests"; .venv/bin/python -m pytest -q -p no:cacheprovider --doctest-modules iii iii_engine iii_streams iii_channels
echo "== docs (mkdocs build --strict)"; bash scripts/docs.sh
echo "== wheel (sdist and wheel, installed into a clean venv)"; bash scripts/test-wheel.sh
# the same unit and integration tests again at the lowest versions pyproject.toml allows (.floors-venv)
bash scripts/test-floors.sh
