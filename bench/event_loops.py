"""Run a benchmark script under each event loop (asyncio, uvloop) and show its output side by side.

The bench scripts are not edited: each run uses an *overlay* interpreter, a throw-away virtual environment on top of
this one whose start-up sets asyncio's event loop policy (``bench/event_loop_overlay/boot.py``). Every loop the
script makes (``asyncio.run``, the SDK's loop thread, an engine it starts) is then of the chosen kind, and so is
every loop of the child processes it starts with ``sys.executable``, whatever environment it gives them (several
scripts replace ``PYTHONPATH``, which rules out a plain ``sitecustomize``). Processes started with another
interpreter (the reference SDK's) keep their own loop. Both loops go through the same overlay, so only the loop
differs.

Each script already compares against a baseline measured in the same run (the raw baselines also run on the chosen
loop), so its ratios are comparable across the two runs; absolute figures wander with the machine's load. With
``--repeat N`` the runs alternate (asyncio, uvloop, uvloop, asyncio, ...). Lines that only differ in their numbers
are printed one under the other, labelled; identical lines once.

Usage: .venv/bin/python bench/event_loops.py SCRIPT [--repeat N] [--timeout S] [-- SCRIPT-ARGS...]
       .venv/bin/python bench/event_loops.py --all        (every README row with its short options)
"""

from __future__ import annotations

import argparse
import difflib
import re
import site
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
BOOT = HERE / "event_loop_overlay" / "boot.py"
LOOPS = ("asyncio", "uvloop")
# every row of the README's benchmark table, with options short enough for both loops in about 25 minutes on
# 2 busy cores (32 minutes with --n 1000 and --calls 2000)
ROWS: dict[str, list[str]] = {
    "engine_roundtrip.py": ["--calls", "3000", "--rounds", "3"],
    "sdk_calls.py": ["--calls", "1200", "--rounds", "3"],
    "channels_throughput.py": ["--rounds", "3", "--size-mib", "64", "--mem-size-mib", "256"],
    "streams_contended.py": ["--n", "600", "--rounds", "2"],
    "streams_backends.py": ["--n", "600", "--rounds", "2"],
    "engine_scale.py": ["--workers", "500", "--channels", "3000", "--subscribers", "500"],
    "http_api.py": ["--requests", "1500", "--mib", "32"],
}
# a figure as the scripts print them: 1,234 / 0.91 / 5.01e+03 (a comma only between digits: "19, x" is not one)
_NUMBER = re.compile(r"[-+]?\d(?:[\d_]|,(?=\d))*(?:\.\d+)?(?:e[-+]?\d+)?")


def make_overlay(root: Path, loop: str) -> Path:
    """An interpreter that sees this environment's packages and starts on ``loop``; returns its ``python``."""
    target = root / loop
    venv.EnvBuilder(symlinks=True, with_pip=False).create(target)
    python = target / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    # a .pth "import" line runs at every start-up; the boot module adds our site-packages (with its own .pth
    # files, so the editable install is seen) and sets the loop policy
    (Path(purelib) / "_iii_event_loop_boot.py").write_text(BOOT.read_text(encoding="utf-8"), encoding="utf-8")
    (Path(purelib) / "_iii_event_loop.pth").write_text(
        f"import _iii_event_loop_boot; _iii_event_loop_boot.boot({site.getsitepackages()[0]!r}, {loop!r})\n",
        encoding="utf-8")
    probe = "import asyncio; loop = asyncio.new_event_loop(); print(type(loop).__module__); loop.close()"
    kind = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()
    if kind.split(".")[0] != loop:
        raise SystemExit(f"event_loops: the {loop} overlay made a loop from {kind!r}")
    return python


def run_script(python: Path, script: Path, args: list[str], timeout: float) -> tuple[list[str], float]:
    """The script's stdout lines and wall time (its stderr passes through; a failure stops the runner)."""
    start = time.monotonic()
    done = subprocess.run([str(python), str(script), *args], stdout=subprocess.PIPE, text=True, timeout=timeout,
                          cwd=HERE.parent)
    if done.returncode != 0:
        sys.stdout.write(done.stdout)
        raise SystemExit(f"event_loops: {script.name} failed with status {done.returncode} under {python}")
    return done.stdout.splitlines(), time.monotonic() - start


def _skeleton(line: str) -> str:
    return _NUMBER.sub("#", line)


def side_by_side(runs: list[tuple[str, list[str]]]) -> list[str]:
    """The runs' outputs aligned on the first one: identical lines once, lines that differ under each other."""
    width = max(len(label) for label, _ in runs)
    ref_label, ref = runs[0]
    aligned: list[dict[int, str]] = []  # per other run: reference line index -> its line
    extra: list[dict[int, list[str]]] = []  # per other run: lines of its own, after that reference index
    for _, lines in runs[1:]:
        matched: dict[int, str] = {}
        unmatched: dict[int, list[str]] = {}
        matcher = difflib.SequenceMatcher(a=[_skeleton(x) for x in ref], b=[_skeleton(x) for x in lines],
                                          autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag in ("equal", "replace") and i2 - i1 == j2 - j1:
                matched.update({i1 + k: lines[j1 + k] for k in range(i2 - i1)})
            elif j2 > j1:
                unmatched.setdefault(i2 - 1, []).extend(lines[j1:j2])
        aligned.append(matched)
        extra.append(unmatched)
    out: list[str] = []
    for index, line in enumerate([*ref, None]):
        if line is not None:
            others = [(runs[n + 1][0], aligned[n].get(index)) for n in range(len(aligned))]
            if all(text == line for _, text in others):
                out.append(f"{'':{width}} | {line}")
            else:
                out.append(f"{ref_label:{width}} | {line}")
                out.extend(f"{label:{width}} | {text if text is not None else '(no such line)'}"
                           for label, text in others)
        for n, unmatched in enumerate(extra):
            out.extend(f"{runs[n + 1][0]:{width}} + {text}" for text in unmatched.get(index, []))
    return out


def compare(script: str, args: list[str], repeat: int, timeout: float, overlays: dict[str, Path]) -> None:
    """Run ``script`` under every loop ``repeat`` times (alternating order) and print the outputs side by side."""
    path = HERE / script
    runs: list[tuple[str, list[str]]] = []
    for round_no in range(repeat):
        order = LOOPS if round_no % 2 == 0 else LOOPS[::-1]
        for loop in order:
            lines, seconds = run_script(overlays[loop], path, args, timeout)
            label = loop if repeat == 1 else f"{loop}#{round_no + 1}"
            print(f"  {script} on {label}: {seconds:.0f} s", flush=True)
            runs.append((label, lines))
    runs.sort(key=lambda run: (LOOPS.index(run[0].split("#")[0]), run[0]))
    print(f"== {script} {' '.join(args)}")
    print("\n".join(side_by_side(runs)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("script", nargs="?", help="a script in bench/, e.g. engine_roundtrip.py "
                                                  "(its own options go after --)")
    parser.add_argument("--all", action="store_true", help="every README row with its short options")
    parser.add_argument("--repeat", type=int, default=1, help="runs per loop (alternating order)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one script run may take")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    script_args = argv[split + 1:]
    if args.all == bool(args.script):
        parser.error("give a SCRIPT or --all")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    jobs = list(ROWS.items()) if args.all else [(args.script, script_args)]
    with tempfile.TemporaryDirectory(prefix="iii-event-loops-") as scratch:
        overlays = {loop: make_overlay(Path(scratch), loop) for loop in LOOPS}
        for script, script_args in jobs:
            compare(script, script_args, args.repeat, args.timeout, overlays)


if __name__ == "__main__":
    main()
