#!/usr/bin/env bash
# Builds the sdist and, from it, the wheel (python -m build), installs the wheel with every extra into a clean
# temporary venv and checks it there, away from the checkout: every package imports from the installed files and
# carries py.typed and __version__, each command answers --version (console script and python -m form), the
# packaged SQL migrations apply, and the sdist carries LICENSE, CHANGELOG.md and README.md.
# Reuses pip's cache, so after the first run it takes well under a minute. Needs `build` in .venv (the dev extra).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d "${TMPDIR:-/tmp}/iii-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "test-wheel: $*" >&2; exit 1; }

.venv/bin/python -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 \
  || { cat "$work/build.log" >&2; fail "python -m build failed (log above)"; }
sdist=$(ls "$work"/dist/iii_toolkit-*.tar.gz) || fail "no sdist built"
wheel=$(ls "$work"/dist/iii_toolkit-*.whl) || fail "no wheel built"
listing=$(tar -tzf "$sdist")
for file in LICENSE CHANGELOG.md README.md pyproject.toml; do
  grep -qx "[^/]*/$file" <<<"$listing" || fail "the sdist lacks $file"
done
if grep -qE "^[^/]*/\.(venv|ref-venv|floors-venv)/" <<<"$listing"; then
  fail "the sdist carries a virtual environment"
fi

.venv/bin/python -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check "$wheel[all,testing]" \
  2> >(grep -v 'is ignored' >&2) || fail "installing the wheel into a clean venv failed"

cd "$work"  # nothing of the checkout is importable from here
"$work/venv/bin/python" - "$(basename "$wheel")" <<'PY'
import importlib, importlib.metadata, pathlib, sys

version = importlib.metadata.version("iii-toolkit")
assert sys.argv[1].startswith(f"iii_toolkit-{version}-"), (sys.argv[1], version)
for name in ("iii", "iii_engine", "iii_streams", "iii_channels", "iii_streams.redis", "iii_streams.sql",
             "iii_streams.testing", "iii_engine.modules.http.api"):
    module = importlib.import_module(name)
    assert "site-packages" in (module.__file__ or ""), f"{name} imported from {module.__file__}, not the wheel"
for name in ("iii", "iii_engine", "iii_streams", "iii_channels"):
    package = importlib.import_module(name)
    assert package.__version__ == version, (name, package.__version__, version)
    assert (pathlib.Path(package.__file__).parent / "py.typed").is_file(), f"{name} has no py.typed"
print(f"wheel {sys.argv[1]}: 4 packages import, py.typed and __version__ {version} present")
PY
for command in iii-engine iii-channel iii-streams; do
  "$work/venv/bin/$command" --version
done
for package in iii_engine iii_channels iii_streams; do
  "$work/venv/bin/python" -m "$package" --version >/dev/null || fail "python -m $package --version failed"
done
"$work/venv/bin/iii-streams" migrate "sqlite+aiosqlite:///$work/streams.db"
echo "test-wheel: ok"
