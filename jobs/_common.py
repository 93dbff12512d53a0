"""What the job entrypoints share: common flags, summaries, exit codes.

The entrypoints are scripts for ``ray job submit --working-dir . -- python jobs/<name>.py …``
(and plain ``python jobs/<name>.py`` on a workstation). Inside a Ray job the driver joins the
cluster through ``RAY_ADDRESS``, which Ray sets and :func:`engine.cluster.ensure_ray` honours.
The engine is imported inside each job function, so ``--help`` works without it.

Exit codes: 0 done (per-slide failures are rows of ``tables/failures``, not errors);
1 ``--strict`` and some slide failed; 2 a fatal SlideFleet error (bad config, unknown model…).
An unexpected exception ends the job with its traceback and exit code 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

EXIT_OK = 0
EXIT_SLIDES_FAILED = 1
EXIT_FATAL = 2
COHORT_STATISTICS = ("micro_dice", "macro_dice", "micro_iou", "macro_iou", "macro_pixel_auc")


def make_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the flags every job takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--address",
        default=None,
        help="Ray address (default: RAY_ADDRESS, which Ray Jobs sets; else a local Ray)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if any slide failed")
    parser.add_argument(
        "--progress", action="store_true", help="progress bars (off: they flood job logs)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return parser


def print_failures(failures: Sequence[Any]) -> None:
    """One line per failed slide; the same rows are in ``tables/failures``."""
    if failures:
        print(f"{len(failures)} failure(s) (also in tables/failures):")
    for failure in failures:
        print(f"  [{failure.stage}] {failure.slide_id}: {failure.error_type}: {failure.message}")


def print_cohort(result: Any) -> None:
    """A few lines about an :class:`engine.operate.CohortResult`: models, cohort figures, record."""
    print(
        f"run {result.run_id}: {result.tables['slides'].num_rows} slide row(s), "
        f"{len(result.failures)} failure(s); root {result.root}"
    )
    for ref, model_id in result.model_ids.items():
        print(f"  model {ref}  model_id {model_id}")
    for row in result.tables["cohort"].to_pylist():
        if row["scope"] == "all" and row["statistic"] in COHORT_STATISTICS:
            value = "-" if row["value"] is None else f"{row['value']:.3f}"
            print(f"  cohort {row['statistic']:16s} {value}  ({row['n_slides']} slides)")
    print(f"  run record: {result.run_record}")


def exit_code(failures: Sequence[object], *, strict: bool) -> int:
    return EXIT_SLIDES_FAILED if (strict and failures) else EXIT_OK


def run(
    job: Callable[[argparse.Namespace], int],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
) -> int:
    """Parse arguments, set up logging, run ``job``; a SlideFleet error becomes exit code 2."""
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from engine.errors import SlideFleetError

    try:
        return int(job(args))
    except SlideFleetError as exc:
        print(f"{parser.prog}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FATAL
