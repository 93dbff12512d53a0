"""``slidefleet``: the command line, a thin layer over the Python API."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from engine import __version__


def _print_failures(failures: Sequence[object]) -> None:
    if not failures:
        return
    print(f"\n{len(failures)} failure(s) (also in tables/failures):")
    for failure in failures:
        print(f"  [{failure.stage}] {failure.slide_id}: {failure.error_type}: {failure.message}")  # type: ignore[attr-defined]


def _cmd_synth(args: argparse.Namespace) -> int:
    from engine.synth import generate_cohort

    kwargs = {}
    if args.width_px:
        kwargs["width_px"] = args.width_px
    if args.height_px:
        kwargs["height_px"] = args.height_px
    manifest = generate_cohort(Path(args.out), args.slides, args.seed, mpp=args.mpp, **kwargs)
    print(f"wrote {args.slides} slides; manifest: {manifest}")
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from engine.config import load_stage_params
    from engine.ingest import IngestParams, ingest

    params = load_stage_params(args.config, "ingest", IngestParams)
    report = ingest(
        Path(args.manifest),
        Path(args.root),
        params=params,
        address=args.address,
        num_cpus=args.num_cpus,
        progress=not args.quiet,
    )
    print(
        f"ingest run {report.run_id}: {len(report.converted)} converted, "
        f"{len(report.skipped)} up to date, {len(report.failures)} failed"
    )
    for result in report.results:
        state = "skipped" if result.skipped else f"{result.seconds:.1f}s"
        print(
            f"  {result.slide_id:24s} {result.width_px:>7d}x{result.height_px:<7d} mpp {result.mpp:.3f} "
            f"levels {result.levels}  tissue {result.tissue_fraction:6.1%}  {state}"
        )
    _print_failures(report.failures)
    return 1 if (args.strict and report.failures) else 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from engine.bench import run_benchmark

    return run_benchmark(args.stage, Path(args.workdir) if args.workdir else None, quick=args.quick)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slidefleet", description="Score whole-slide-image cohorts on Ray.")
    parser.add_argument("--version", action="version", version=f"slidefleet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="write a synthetic cohort of pyramidal TIFF slides")
    synth.add_argument("--slides", type=int, required=True, help="number of slides")
    synth.add_argument("--out", required=True, help="output folder (manifest.csv is written there)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--mpp", type=float, default=0.5, help="microns per pixel at level 0")
    synth.add_argument("--width-px", type=int, default=None, help="fixed slide width (default: a mix)")
    synth.add_argument("--height-px", type=int, default=None, help="fixed slide height (default: a mix)")
    synth.set_defaults(handler=_cmd_synth)

    ingest = commands.add_parser("ingest", help="convert a manifest's slides into OME-Zarr stores")
    ingest.add_argument("manifest", help="manifest CSV or Parquet")
    ingest.add_argument("--root", required=True, help="fleet root folder")
    ingest.add_argument("--config", default=None, help="job config (YAML/TOML/JSON) with an 'ingest' section")
    ingest.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    ingest.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray")
    ingest.add_argument("--strict", action="store_true", help="exit 1 if any slide failed")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")
    ingest.set_defaults(handler=_cmd_ingest)

    bench = commands.add_parser("bench", help="measure a stage against its floor (prints ratios)")
    bench.add_argument("stage", choices=["ingest"], help="stage to benchmark")
    bench.add_argument("--workdir", default=None, help="where to write generated slides (default: a temp dir)")
    bench.add_argument("--quick", action="store_true", help="smaller slides (a smoke run)")
    bench.set_defaults(handler=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from engine.errors import SlideFleetError

    try:
        return int(args.handler(args))
    except SlideFleetError as exc:
        print(f"slidefleet: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
