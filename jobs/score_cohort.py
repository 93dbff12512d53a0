"""Ray job, the main one: ingest, score, post-process and render a cohort.

    ray job submit --working-dir . -- python jobs/score_cohort.py MANIFEST \
        --model NAME[:VERSION] --root ROOT [--config job.yaml]

Paths are as the cluster's nodes see them (a shared file system), not relative to the uploaded
working dir. Outputs whose inputs, model and parameters are unchanged are skipped, so re-running
the job after a failure or on a grown manifest does only the missing work.
"""

from __future__ import annotations

import argparse
import sys

from _common import exit_code, make_parser, print_cohort, print_failures, run


def score_cohort_job(args: argparse.Namespace) -> int:
    from engine.operate import load_job_config, score_cohort

    job = load_job_config(
        args.config,
        {
            "manifest": args.manifest,
            "root": args.root,
            "models": args.model,
            "address": args.address,
            "demo_models": args.demo_models or None,
            "views": False if args.no_views else None,
            "strict": args.strict or None,
            "retry_failed": args.retry_failed or None,
        },
    )
    result = score_cohort(config=job, progress=args.progress)
    print_cohort(result)
    print_failures(result.failures)
    return exit_code(result.failures, strict=job.strict)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("Score a cohort end to end (ingest → infer → post → views) on Ray.")
    parser.add_argument(
        "manifest", nargs="?", default=None, help="manifest CSV/Parquet (or 'manifest' in --config)"
    )
    parser.add_argument(
        "--model", action="append", default=None, help="model name[:version] (repeatable)"
    )
    parser.add_argument(
        "--root", default=None, help="fleet root on the shared file system (or 'root' in --config)"
    )
    parser.add_argument(
        "--config", default=None, help="job config file (schemas/job-config.schema.json)"
    )
    parser.add_argument(
        "--demo-models", action="store_true", help="train and register the demo models first"
    )
    parser.add_argument("--no-views", action="store_true", help="skip heatmaps and the report")
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="retry slides whose last attempt failed on the same inputs (default: skip them)",
    )
    return run(score_cohort_job, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
