#!/usr/bin/env bash
# Runs the unit and integration tests against the LOWEST versions pyproject.toml allows, so every declared floor
# ("websockets>=16.0", ...) is a version the suite really passes. Creates .floors-venv (idempotent), pins each
# `name>=X` / `name==X` of the runtime dependencies, every extra and the dev tools to exactly X (constraints written
# from pyproject.toml, the one source of truth), checks that the installed versions are those floors, then runs
# pytest. Transitive dependencies resolve to their newest compatible versions. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.floors-venv
UV_VERSION=0.13.9

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "test-floors: needs Python 3.11 or newer as '$PY' (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV" || { echo "test-floors: '$PY -m venv' failed (on Debian: apt-get install python3-venv)" >&2; exit 1; }
fi
if [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("uv"))' 2>/dev/null)" != "$UV_VERSION" ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi

# pyproject.toml -> one `name==floor` constraint per declared dependency (runtime, every extra, dev tools) and the
# list of extras to install; a requirement without a floor fails here, so nothing can slip in untested.
"$VENV/bin/python" - pyproject.toml "$VENV/extras.txt" >"$VENV/floors.txt" <<'EOF'
import re, sys, tomllib

project = tomllib.load(open(sys.argv[1], "rb"))["project"]
groups = {"dependencies": project["dependencies"], **project["optional-dependencies"]}
floors: dict[str, str] = {}
for group, requirements in groups.items():
    for requirement in requirements:
        # name[extras] >=X (or ==X), then any `,!=Y` exclusions (a release known broken: never the floor itself)
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*(\[[^\]]*\])?\s*(?:(>=|==)\s*([^,;\s]+))?"
                             r"((?:\s*,\s*!=\s*[^,;\s]+)*)\s*", requirement)
        if match is None:
            sys.exit(f"test-floors: cannot read requirement {requirement!r} in [{group}]")
        name, _, op, version, excluded = match.groups()
        if version is not None and re.search(rf"!=\s*{re.escape(version)}(?:,|\s|$)", excluded or ""):
            sys.exit(f"test-floors: {requirement!r} in [{group}] excludes its own floor")
        if name == project["name"]:
            continue  # a self-reference such as iii-toolkit[redis,...]
        if version is None:
            sys.exit(f"test-floors: {requirement!r} in [{group}] has no floor (write name>=X)")
        key = name.lower().replace("_", "-")
        if floors.setdefault(key, version) != version:
            sys.exit(f"test-floors: {name} has two floors: {floors[key]} and {version}")
for name, version in sorted(floors.items()):
    print(f"{name}=={version}")
with open(sys.argv[2], "w") as extras:
    extras.write(",".join(project["optional-dependencies"]))
EOF

# Only wheels for third-party packages: a floor that needs a compiler on Python 3.11 is not a usable floor.
"$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --only-binary :all: -c "$VENV/floors.txt" -e ".[$(cat "$VENV/extras.txt")]"
"$VENV/bin/python" - "$VENV/floors.txt" <<'EOF'
import importlib.metadata as metadata, sys
from packaging.version import Version

wrong = []
for line in open(sys.argv[1]):
    name, floor = line.strip().split("==")
    installed = metadata.version(name)
    if Version(installed) != Version(floor):
        wrong.append(f"{name} {installed} (floor {floor})")
if wrong:
    sys.exit("test-floors: not running at the floors: " + ", ".join(wrong))
print("test-floors: " + " ".join(line.strip() for line in open(sys.argv[1])))
EOF

bash scripts/services.sh
# some integration tests drive the reference SDK (made by scripts/setup.sh --with-reference), as in scripts/test.sh
export III_REF_PYTHON="${III_REF_PYTHON:-$PWD/.ref-venv/bin/python}"
echo "== pytest at the dependency floors"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -n 3 --dist loadfile tests/unit tests/integration "$@"
