"""Print every benchmark figure, next to its peer measured in the same run, as one JSON line each.

    python benchmarks/run.py [--quick] [--only NAME ...] [--scale X] [--dir PATH] [--no-progress]

Progress and goal checks go to stderr, so stdout is only JSON lines. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    from grace_core import bench
    from grace_core.errors import BenchError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 10x smaller sizes")
    parser.add_argument(
        "--only",
        nargs="+",
        action="extend",
        metavar="NAME",
        help="benchmarks or figures to run, by name or glob (e.g. 'mesh.*')",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size and duration")
    parser.add_argument("--dir", help="where to put the temporary files (default: the system temp directory)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = parser.parse_args(argv)
    try:
        figures = bench.run(
            quick=args.quick,
            only=args.only,
            progress=not args.no_progress,
            scale=args.scale,
            workdir=args.dir,
        )
    except BenchError as exc:  # an unknown name or a bad scale
        parser.error(str(exc))  # exits with status 2
    for fig in figures:
        print(json.dumps(fig), flush=True)
        for goal, met in bench.goal_status(fig):
            verdict = "met" if met else "MISSED"
            print(f"goal {verdict}: {goal.text} ({goal.on} {fig[goal.on]:,})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
