"""``python -m bench.chaos [--quick] [--only a,b] [--json]``: run the chaos scenarios, print a figures table
with PASS/FAIL per target, exit 1 when any target failed (2 on bad arguments)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from . import SCENARIOS, Report, run_scenario


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; ``--only`` names are checked."""
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="counts divided by ~100, every kind kept")
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help=f"comma-separated scenarios (default all: {','.join(SCENARIOS)})")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        parser.error(f"--only: unknown scenario(s) {', '.join(unknown) or '(none given)'}; "
                     f"choose from {', '.join(SCENARIOS)}")
    args.names = names
    return args


def table(reports: list[Report]) -> str:
    """The figures as an aligned text table."""
    rows = [("scenario", "figure", "value", "target", "result", "detail")]
    for report in reports:
        for f in report.figures:
            value = f"{f.value:,}" if isinstance(f.value, int) else str(f.value)
            result = "" if f.ok is None else ("PASS" if f.ok else "FAIL")
            rows.append((f.scenario, f.name, f"{value} {f.unit}".strip(), f.target, result, f.detail[:160]))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5]
                     for r in rows)


async def main_async(args: argparse.Namespace) -> list[Report]:
    """Run the chosen scenarios one after another (they share the machine's two cores)."""
    reports = []
    for name in args.names:
        report = await run_scenario(name, args.quick)
        reports.append(report)
        if not args.json:
            print(table([report]).split("\n", 1)[1], flush=True)
    return reports


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    reports = asyncio.run(main_async(args))
    failed = [f for r in reports for f in r.failed]
    if args.json:
        print(json.dumps({"quick": args.quick, "figures": [d for r in reports for d in r.as_dicts()],
                          "failed": len(failed)}, indent=1))
    else:
        print()
        print(table(reports))
        print(f"\n{len(failed)} target(s) failed" if failed else "\nall targets met")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
