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
    from engine.ingest import IngestParams, ingest

    params = _stage_params(args, "ingest", IngestParams, {})
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


def _stage_params(args: argparse.Namespace, section: str, model: type, overrides: dict[str, object]):
    """Config-file section, then explicit CLI flags on top; validated with field-named errors."""
    from engine.config import parse_section, read_config_file

    data = read_config_file(args.config) if getattr(args, "config", None) else {}
    merged = {**(data.get(section) or {}), **{k: v for k, v in overrides.items() if v is not None}}
    return parse_section({section: merged}, section, model, source=args.config or "command line")


def _cmd_models(args: argparse.Namespace) -> int:
    from engine.models import ModelRegistry, make_demo_models

    registry = ModelRegistry(Path(args.root))
    if args.models_command == "add":
        card = Path(args.card)
        registered = registry.add(Path(args.model_file), card, name=args.name, version=args.version)
        print(f"registered {registered.ref}  model_id {registered.model_id}")
        return 0
    if args.models_command == "demo":
        for registered in make_demo_models(Path(args.root), seed=args.seed):
            print(f"registered {registered.ref:34s} model_id {registered.model_id}  ({registered.card.kind})")
        return 0
    models = registry.list()
    if not models:
        print(f"no models registered under {registry.models_dir}")
        return 0
    print(f"{'name':28s} {'version':10s} {'model_id':18s} {'kind':18s} {'mpp':>5s} {'tile':>5s}  classes")
    for m in models:
        print(f"{m.name:28s} {m.version:10s} {m.model_id:18s} {m.card.kind:18s} {m.card.mpp:5.2f} "
              f"{m.card.tile_size_px:5d}  {', '.join(m.card.class_names)}")
    return 0


def _cmd_infer(args: argparse.Namespace) -> int:
    from engine.infer import InferParams, infer

    params = _stage_params(args, "infer", InferParams, {
        "batch_size": args.batch_size, "tta": args.tta, "gpus_per_actor": args.gpus_per_actor,
        "cpus_per_actor": args.cpus_per_actor, "max_actors": args.max_actors,
        "use_gpus": False if args.no_gpus else None,
    })
    report = infer(Path(args.root), args.model, params=params, address=args.address,
                   slide_ids=args.slides, progress=not args.quiet)
    print(f"infer run {report.run_id}: model {report.model.ref} (model_id {report.model.model_id})")
    print(f"  {len(report.scored)} scored, {len(report.skipped)} up to date, {len(report.failures)} failed; "
          f"{report.tiles} tiles in {report.seconds:.1f}s ({report.tiles_per_second:.1f} tiles/s)")
    for actor in report.actors:
        busy = actor.get("model_busy_fraction")
        print(f"  actor pid {actor.get('pid')} on {actor.get('device')} gpu_ids {actor.get('gpu_ids')}: "
              f"{actor.get('tiles', 0)} tiles, model busy {busy:.0%}" if busy is not None else
              f"  actor pid {actor.get('pid')}: idle")
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

    models = commands.add_parser("models", help="register, list and make demo models")
    models_commands = models.add_subparsers(dest="models_command", required=True)
    models_add = models_commands.add_parser("add", help="register a TorchScript / torch.export file with its card")
    models_add.add_argument("model_file", help="TorchScript (.pt) or torch.export (.pt2) file")
    models_add.add_argument("--card", required=True, help="model card JSON, or a WSInfer config.json")
    models_add.add_argument("--name", default=None, help="model name (needed for a WSInfer config.json)")
    models_add.add_argument("--version", default=None, help="model version (needed for a WSInfer config.json)")
    models_add.add_argument("--root", required=True, help="fleet root folder")
    models_list = models_commands.add_parser("list", help="show registered models")
    models_list.add_argument("--root", required=True, help="fleet root folder")
    models_demo = models_commands.add_parser("demo", help="train and register the demo models (seconds, CPU)")
    models_demo.add_argument("--root", required=True, help="fleet root folder")
    models_demo.add_argument("--seed", type=int, default=0)
    models.set_defaults(handler=_cmd_models)

    infer = commands.add_parser("infer", help="score ingested slides with a model on Ray actors")
    infer.add_argument("--model", required=True, help="registered model, name[:version]")
    infer.add_argument("--root", required=True, help="fleet root folder")
    infer.add_argument("--config", default=None, help="job config with an 'infer' section")
    infer.add_argument("--slides", nargs="*", default=None, help="only these slide IDs")
    infer.add_argument("--batch-size", type=int, default=None, help="infer.batch_size")
    infer.add_argument("--tta", choices=["none", "flips", "dihedral"], default=None, help="infer.tta")
    infer.add_argument("--gpus-per-actor", type=float, default=None, help="infer.gpus_per_actor (0.5 packs two)")
    infer.add_argument("--cpus-per-actor", type=float, default=None, help="infer.cpus_per_actor")
    infer.add_argument("--max-actors", type=int, default=None, help="infer.max_actors")
    infer.add_argument("--no-gpus", action="store_true", help="infer.use_gpus = false: CPU actors only")
    infer.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    infer.add_argument("--strict", action="store_true", help="exit 1 if any slide failed")
    infer.add_argument("--quiet", action="store_true", help="no progress bar")
    infer.set_defaults(handler=_cmd_infer)

    bench = commands.add_parser("bench", help="measure a stage against its floor (prints ratios)")
    bench.add_argument("stage", choices=["ingest", "infer"], help="stage to benchmark")
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
