"""Ray job, the scheduled one: recompute exactly what a new model version or input made stale.

    ray job submit --working-dir . -- python jobs/reprocess.py --root ROOT [--dry-run]

The job as last run on ROOT (manifest, models, parameters) is read from ROOT/fleet.json; a model
named without a version follows its latest registered version.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import exit_code, make_parser, print_cohort, print_failures, run


def reprocess_job(args: argparse.Namespace) -> int:
    from engine.cluster import ensure_ray
    from engine.operate import reprocess

    if args.address:  # otherwise RAY_ADDRESS (set by Ray Jobs) or the address stored with the job
        ensure_ray(args.address)
    plan, result = reprocess(Path(args.root), dry_run=args.dry_run, progress=args.progress,
                             retry_failed=True if args.retry_failed else None)
    print(("plan (dry run):\n" if args.dry_run else "plan:\n") + plan.describe())
    if result is None:
        if not args.dry_run:
            print("nothing stale: all outputs are up to date")
        return 0
    print_cohort(result)
    print_failures(result.failures)
    return exit_code(result.failures, strict=args.strict)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("Recompute the stale outputs of a fleet root on Ray.")
    parser.add_argument("--root", required=True, help="fleet root made by score_cohort")
    parser.add_argument("--dry-run", action="store_true", help="print the plan only")
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="retry slides whose last attempt failed on the same inputs (default: skip them)",
    )
    return run(reprocess_job, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
