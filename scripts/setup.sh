#!/usr/bin/env bash
# Creates .venv (idempotent) and installs the toolkit with every extra and the test tools.
# Also creates .ref-venv with the reference SDK (iii-sdk 0.10.0) for the interop tests: it uses the same import
# name `iii`, so it must never share an environment with ours.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[all,dev]' 2>&1 | grep -v 'is ignored' || true
.venv/bin/python -c 'import iii, iii_engine, iii_streams, iii_channels' >/dev/null
if [ "${1:-}" = "--with-reference" ]; then
  if [ ! -x .ref-venv/bin/python ] || ! .ref-venv/bin/python -c 'import iii' 2>/dev/null; then
    "$PY" -m venv .ref-venv
    .ref-venv/bin/python -m pip install -q --disable-pip-version-check 'iii-sdk==0.10.0' 2>&1 | grep -v 'is ignored' || true
  fi
  .ref-venv/bin/python -c 'import iii.iii' >/dev/null
fi
