"""Ray job: convert a manifest's slides into OME-Zarr stores under a fleet root.

    ray job submit --working-dir . -- python jobs/ingest.py MANIFEST --root ROOT [--config FILE]

Paths are as the cluster's nodes see them (a shared file system).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import exit_code, make_parser, print_failures, run


def ingest_job(args: argparse.Namespace) -> int:
    from engine.config import load_stage_params
    from engine.ingest import IngestParams, ingest

    params = load_stage_params(args.config, "ingest", IngestParams)
    report = ingest(
        Path(args.manifest),
        Path(args.root),
        params=params,
        address=args.address,
        progress=args.progress,
    )
    print(
        f"ingest run {report.run_id}: {len(report.converted)} converted, "
        f"{len(report.skipped)} up to date, {len(report.failures)} failed; root {args.root}"
    )
    print_failures(report.failures)
    return exit_code(report.failures, strict=args.strict)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("Ingest a cohort (slides → OME-Zarr) on Ray.")
    parser.add_argument("manifest", help="manifest CSV or Parquet")
    parser.add_argument("--root", required=True, help="fleet root on the shared file system")
    parser.add_argument(
        "--config", default=None, help="config file (YAML/TOML/JSON); its 'ingest' section is used"
    )
    return run(ingest_job, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
