#!/usr/bin/env bash
# Installs everything (idempotent) and runs the main job on the embedded default: engine in-process, SQLite store.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m examples.demo "$@"
