#!/usr/bin/env bash
# Builds the documentation site strictly (a broken link, anchor or API reference fails): bash scripts/docs.sh [OUT_DIR]
# Needs the docs tools in .venv (pip install -e '.[docs]'); writes to OUT_DIR, default a fresh temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/mkdocs ]; then
    echo "docs.sh: .venv/bin/mkdocs not found; install the docs tools: .venv/bin/pip install -e '.[docs]'" >&2
    exit 1
fi
out="${1:-$(mktemp -d "${TMPDIR:-/tmp}/iii-docs.XXXXXX")}"
export NO_MKDOCS_2_WARNING=1
.venv/bin/mkdocs build --strict --clean --site-dir "$out"
echo "docs built in $out"
