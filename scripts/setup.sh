#!/usr/bin/env bash
# Creates .venv (idempotent) and installs the toolkit with every extra, the test tools and the docs tools.
# With --with-reference, also creates .ref-venv with the reference SDK (iii-sdk 0.10.0) for the interop tests: it
# uses the same import name `iii`, so it must never share an environment with ours.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: needs Python 3.11 or newer as '$PY' (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

# pip's harmless notes about missing local index folders are filtered; its exit status is kept.
quiet_pip() { "$@" 2> >(grep -v 'is ignored' >&2); }

make_venv() {
  local dir=$1
  if [ ! -x "$dir/bin/python" ]; then
    "$PY" -m venv "$dir" || { echo "setup: '$PY -m venv' failed (on Debian: apt-get install python3-venv)" >&2; exit 1; }
  fi
}

make_venv .venv
quiet_pip .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[all,dev,docs]'
.venv/bin/python -c 'import iii, iii_engine, iii_streams, iii_channels, orjson, redis, sqlalchemy, aiohttp, build, mkdocs'

if [ "${1:-}" = "--with-reference" ]; then
  make_venv .ref-venv
  # the otel extra lets the observability tests see the reference SDK's logs, spans and metrics
  if ! .ref-venv/bin/python -P -c 'import iii.iii, opentelemetry.sdk' 2>/dev/null; then
    quiet_pip .ref-venv/bin/python -m pip install -q --disable-pip-version-check 'iii-sdk[otel]==0.10.0'
  fi
  .ref-venv/bin/python -P -c 'import iii.iii, opentelemetry.sdk'
fi
