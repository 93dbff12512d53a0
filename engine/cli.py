"""``slidefleet``: the command line, a thin layer over the Python API.

The Ray Jobs entrypoints (``jobs/*.py``) run these same commands (``jobs/_common.py``), so a
flag, a summary line or an exit code cannot drift between the two.

Exit codes: 0 done (per-slide failures are rows of ``tables/failures``, not errors); 1 with
``--strict`` when some slide failed; 2 a fatal SlideFleet error (bad config, unknown model...).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from engine import __version__

# Exit codes: 0 done (slide failures are rows of tables/failures), 1 --strict and some slide
# failed, 2 a usage or input error (bad manifest, config), 3 an output could not be written
# (disk full, permissions): free space and run again, finished work is kept.
EXIT_OUTPUT_NOT_WRITTEN = 3


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


def _stage_params(
    args: argparse.Namespace, section: str, model: type, overrides: dict[str, object]
):
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
            print(
                f"registered {registered.ref:34s} model_id {registered.model_id}  ({registered.card.kind})"
            )
        return 0
    models = registry.list()
    if not models:
        print(f"no models registered under {registry.models_dir}")
        return 0
    print(
        f"{'name':28s} {'version':10s} {'model_id':18s} {'kind':18s} {'mpp':>5s} {'tile':>5s}  classes"
    )
    for m in models:
        print(
            f"{m.name:28s} {m.version:10s} {m.model_id:18s} {m.card.kind:18s} {m.card.mpp:5.2f} "
            f"{m.card.tile_size_px:5d}  {', '.join(m.card.class_names)}"
        )
    return 0


def _cmd_infer(args: argparse.Namespace) -> int:
    from engine.infer import InferParams, infer

    params = _stage_params(
        args,
        "infer",
        InferParams,
        {
            "batch_size": args.batch_size,
            "tta": args.tta,
            "gpus_per_actor": args.gpus_per_actor,
            "cpus_per_actor": args.cpus_per_actor,
            "max_actors": args.max_actors,
            "device": "cpu" if args.no_gpus else args.device,
        },
    )
    from engine.qc.gate import excluded_slides, without_excluded
    from engine.store import FleetLayout

    # The QC gate holds here as in `run`: slides the latest `slidefleet qc --exclude` kept out
    # (each has its QcExcluded failures row) are not scored.
    root = Path(args.root)
    excluded = set(excluded_slides(FleetLayout(root).tables_dir))
    slide_ids = without_excluded(root, args.slides, excluded)
    report = infer(
        root,
        args.model,
        params=params,
        address=args.address,
        slide_ids=slide_ids,
        progress=not args.quiet,
    )
    print(f"infer run {report.run_id}: model {report.model.ref} (model_id {report.model.model_id})")
    kept_out = sorted(excluded if args.slides is None else excluded & set(args.slides))
    if kept_out:
        print(
            f"  {len(kept_out)} slide(s) kept out by the QC gate (qc.exclude): "
            + ", ".join(kept_out[:10])
            + (" ..." if len(kept_out) > 10 else "")
        )
    print(
        f"  {len(report.scored)} scored, {len(report.skipped)} up to date, {len(report.failures)} failed; "
        f"{report.tiles} tiles in {report.seconds:.1f}s ({report.tiles_per_second:.1f} tiles/s)"
    )
    if report.device:
        print(
            f"  device {report.device['device']} ({report.device['reason']}); {len(report.actors)} of "
            f"{report.actors_wanted} actors placed, first after {report.scale_up_wait_s or 0:.1f}s"
        )
    for actor in report.actors:
        busy = actor.get("model_busy_fraction")
        print(
            f"  actor pid {actor.get('pid')} on {actor.get('device')} gpu_ids {actor.get('gpu_ids')}: "
            f"{actor.get('tiles', 0)} tiles, model busy {busy:.0%}"
            if busy is not None
            else f"  actor pid {actor.get('pid')}: idle"
        )
    _print_failures(report.failures)
    return 1 if (args.strict and report.failures) else 0


def _parse_duration_s(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (use e.g. 30s, 15m, 2h)"
        ) from None


def _job_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        "manifest": getattr(args, "manifest", None),
        "root": args.root,
        "models": getattr(args, "model", None) or None,
        "address": getattr(args, "address", None),
        "dask_address": getattr(args, "dask_address", None),
        "demo_models": True if getattr(args, "demo_models", False) else None,
        "views": False if getattr(args, "no_views", False) else None,
        "strict": True if getattr(args, "strict", False) else None,
        "retry_failed": True if getattr(args, "retry_failed", False) else None,
        "stream": False if getattr(args, "no_stream", False) else None,
        "infer": {"device": args.device} if getattr(args, "device", None) else None,
    }


HEADLINE_STATISTICS = ("micro_iou", "macro_iou", "micro_dice", "macro_dice", "macro_pixel_auc")


def cohort_headline_lines(
    cohort_rows: Sequence[dict], model_names: dict[str, str] | None = None
) -> list[str]:
    """The cohort figures the CLI prints: per model, the split the report headlines (``test`` when
    the cohort has one, else all slides), named with its slide count and how many lacked truth."""
    from engine.metrics.cohort import headline_split

    lines: list[str] = []
    for model_id in sorted({r["model_id"] for r in cohort_rows}):
        rows = [r for r in cohort_rows if r["model_id"] == model_id and r["burden"] == "all"]
        split = headline_split(rows)
        scoped = {r["statistic"]: r for r in rows if r["split"] == split}
        if not scoped:
            continue
        first = next(iter(scoped.values()))
        n, without = first["n_slides"], first.get("n_slides_without_truth") or 0
        what = "test split" if split == "test" else "all slides (no test split)"
        missing = f", {without} without ground truth (not in the figures)" if without else ""
        name = (model_names or {}).get(model_id, model_id)
        lines.append(f"  cohort {name}: {what}, {n} slide{'s' * (n != 1)}{missing}")
        for statistic in HEADLINE_STATISTICS:
            row = scoped.get(statistic)
            if row is None:
                continue
            value = "-" if row["value"] is None else f"{row['value']:.3f}"
            undefined = f"  ({row['n_undefined']} undefined)" if row.get("n_undefined") else ""
            lines.append(f"  cohort {statistic:16s} {value}{undefined}")
    return lines


def _print_not_retried(known: dict[str, dict[str, str]]) -> None:
    for stage, slides in sorted(known.items()):
        print(
            f"\n{len(slides)} slide(s) not retried at {stage}: their last attempt failed on the same inputs "
            "(--retry-failed retries them; a changed slide is retried by itself):"
        )
        for slide_id, error in sorted(slides.items()):
            print(f"  {slide_id}: {error}")


def _print_cohort_summary(result) -> None:  # noqa: ANN001 - CohortResult
    print(
        f"run {result.run_id}: {result.tables['slides'].num_rows} slide row(s), "
        f"{len(result.failures)} failure(s); root {result.root}"
    )
    for ref, model_id in result.model_ids.items():
        print(f"  model {ref}  model_id {model_id}")
    slides = result.tables["slides"].to_pylist()
    if slides:
        print(
            f"\n{'slide':22s} {'model':26s} {'split':11s} {'tumour %':>9s} {'truth %':>8s} "
            f"{'IoU':>6s} {'Dice':>6s} {'AUC':>6s}  case"
        )
        names = {v: k for k, v in result.model_ids.items()}

        def fmt(value: object, spec: str = "6.3f") -> str:
            return "-".rjust(int(spec.split(".")[0])) if value is None else format(value, spec)

        for row in sorted(slides, key=lambda r: (r["model_id"], r["slide_id"])):
            print(
                f"{row['slide_id']:22s} {names.get(row['model_id'], row['model_id']):26s} "
                f"{row['split'] or '-':11s} {fmt(row['tumour_pct_of_tissue'], '9.2f')} "
                f"{fmt(row['truth_pct_of_tissue'], '8.2f')} {fmt(row['iou'])} {fmt(row['dice'])} "
                f"{fmt(row['pixel_auc'])}  {row['case'] or '-'}"
            )
    names = {v: k for k, v in result.model_ids.items()}
    for line in cohort_headline_lines(result.tables["cohort"].to_pylist(), names):
        print(line)
    for stage, values in result.stages.items():
        print(f"  stage {stage:36s} {values.get('seconds', 0):7.1f} s")
        device = values.get("device")
        if isinstance(device, dict) and device.get("device"):
            print(
                f"    device {device['device']}: {device.get('reason')}; {len(values.get('actors') or [])} of "
                f"{values.get('actors_wanted')} actors placed (scale-up wait {values.get('scale_up_wait_s') or 0:.1f} s)"
            )
    print(f"run record: {result.run_record}")


def _cmd_run(args: argparse.Namespace) -> int:
    from engine.operate import load_job_config, score_cohort

    job = load_job_config(args.config, _job_overrides(args))
    result = score_cohort(config=job, progress=not args.quiet)
    _print_cohort_summary(result)
    _print_failures(result.failures)
    _print_not_retried(result.known_failures)
    if result.write_errors:
        for message in result.write_errors:
            print(f"slidefleet: not written: {message}", file=sys.stderr)
        return EXIT_OUTPUT_NOT_WRITTEN
    return 1 if (job.strict and result.failures) else 0


def _cmd_reprocess(args: argparse.Namespace) -> int:
    from engine.operate import JobConfig, reprocess
    from engine.operate.pipeline import load_fleet_state
    from engine.store import FleetLayout

    stored = load_fleet_state(FleetLayout(Path(args.root)))
    job = None
    if args.config:  # the file's sections replace the stored ones; the rest is as last run
        from engine.operate import load_job_config

        changed = load_job_config(args.config, {"root": args.root}).model_dump(
            mode="json", exclude_unset=True
        )
        job = JobConfig.model_validate({**stored.model_dump(mode="json"), **changed})
    if args.address:  # otherwise the address stored with the job, else RAY_ADDRESS (Ray Jobs)
        from engine.cluster import ensure_ray

        ensure_ray(args.address)
    plan, result = reprocess(
        Path(args.root),
        config=job,
        dry_run=args.dry_run,
        progress=not args.quiet,
        retry_failed=True if args.retry_failed else None,
    )
    print(("plan (dry run):\n" if args.dry_run else "plan:\n") + plan.describe())
    if result is None:
        if not args.dry_run:
            print("nothing stale: all outputs are up to date")
        return 0
    _print_cohort_summary(result)
    _print_failures(result.failures)
    strict = args.strict or (job or stored).strict
    return 1 if (strict and result.failures) else 0


def _cmd_watch(args: argparse.Namespace) -> int:
    from engine.operate import watch

    runs = watch(Path(args.root), every_s=args.every, max_runs=args.max_runs)
    print(f"watch: {runs} poll(s)")
    return 0


def _cmd_post(args: argparse.Namespace) -> int:
    from engine.post import PostParams, post

    params = _stage_params(args, "post", PostParams, {})
    report = post(
        Path(args.root),
        args.model,
        params=params,
        dask_address=args.dask_address,
        progress=not args.quiet,
    )
    print(
        f"post run {report.run_id}: {report.tables['slides'].num_rows} slides, "
        f"{report.tables['regions'].num_rows} regions, {len(report.failures)} failed"
    )
    _print_failures(report.failures)
    return 1 if (args.strict and report.failures) else 0


def _cmd_views(args: argparse.Namespace) -> int:
    from engine.views import ViewParams, render_views

    params = _stage_params(args, "view", ViewParams, {})
    report = render_views(Path(args.root), args.model, params=params, slide_ids=args.slides)
    print(f"views: {len(report.paths)} files written")
    report_paths = [p for p in report.paths if Path(p).name == "report.html"]
    if report_paths:
        print(f"cohort report: {report_paths[0]}")
    _print_failures(report.failures)
    return 0


def _cmd_qc(args: argparse.Namespace) -> int:
    from engine.ingest import IngestParams
    from engine.qc.params import QcParams
    from engine.qc.stage import qc

    overrides: dict[str, object] = {"pixel_um": args.pixel_um}
    if args.exclude is not None:
        overrides["exclude"] = args.exclude
    params = _stage_params(args, "qc", QcParams, overrides)
    class_map = _stage_params(args, "ingest", IngestParams, {}).class_map
    report = qc(
        Path(args.root),
        params=params,
        class_map=class_map,
        address=args.address,
        num_cpus=args.num_cpus,
        progress=not args.quiet,
    )
    print(
        f"qc run {report.run_id}: {len(report.rows)} slides measured at "
        f"{params.pixel_um:g} µm/px, {len(report.flagged)} flagged, {len(report.excluded)} excluded"
    )
    for row in report.rows:
        blur = row["blurred_tile_fraction"]
        print(
            f"  {row['slide_id']:24s} tissue {row['tissue_area_mm2']:7.1f} mm²  "
            f"blurred {'   -' if blur is None else f'{blur:4.0%}'}  pen {row['pen_fraction']:5.1%}  "
            f"{', '.join(row['flags']) or 'ok'}{'  (excluded)' if row['excluded'] else ''}"
        )
        for reason in row["reasons"]:
            print(f"      {reason}")
    _print_failures([f for f in report.failures if f.error_type != "QcExcluded"])
    return 1 if (args.strict and report.failures) else 0


def _cmd_split(args: argparse.Namespace) -> int:
    from engine.operate.split import split_manifest
    from engine.splits import SplitFractions

    train, calibration, test = args.fractions
    report = split_manifest(
        args.manifest,
        args.out,
        fractions=SplitFractions(train, calibration, test),
        seed=args.seed,
        stratify_by=args.stratify_by,
        site_column=args.site_column,
        group_by=args.group_by,
    )
    print("\n".join(report.lines()))
    return 0


def _cmd_mil(args: argparse.Namespace) -> int:
    from engine.config import read_config_file
    from engine.mil.params import MilParams
    from engine.mil.stage import predict_mil_model, train_mil_model

    # Bag flags (train only) join the config's mil.bags before validation, so `--k 0` is refused
    # with the field's name, as a bad value in the file would be.
    bag_flags = {
        key: getattr(args, key, None)
        for key in ("features_model", "score_model", "selection", "k")
        if getattr(args, key, None) is not None
    }
    overrides: dict[str, object] = {
        "epochs": getattr(args, "epochs", None),
        "name": getattr(args, "name", None),
    }
    if bag_flags:
        data = read_config_file(args.config) if args.config else {}
        overrides["bags"] = {**((data.get("mil") or {}).get("bags") or {}), **bag_flags}
    params = _stage_params(args, "mil", MilParams, overrides)
    if args.mil_command == "train":
        trained = train_mil_model(
            Path(args.root), Path(args.manifest), params, address=args.address
        )
        card = trained.model.card
        print(
            f"mil train run {trained.run_id}: registered {trained.model.ref} "
            f"(model_id {trained.model.model_id}) on {trained.device} in {trained.seconds:.1f}s"
        )
        print(
            f"  {trained.train_slides} train / {trained.calibration_slides} calibration slides; "
            f"kept epoch {trained.best_epoch} (calibration loss {card.training['calibration_loss']})"
        )
        _print_failures(trained.failures)
        return 0
    report = predict_mil_model(
        Path(args.root),
        args.model,
        Path(args.manifest),
        params,
        splits=args.splits,
        address=args.address,
    )
    print(
        f"mil predict run {report.run_id}: {report.model.ref} on {len(report.rows)} slides "
        f"({len(report.skipped)} up to date) in {report.seconds:.1f}s"
    )
    for row in report.rows:
        print(
            f"  {row['slide_id']:22s} {row['split'] or '-':11s} truth {row['true_label'] or '-':8s} "
            f"predicted {row['predicted_class']:8s} p={row['score']:.3f} "
            f"attention entropy {row['attention_entropy']:.2f} ({row['bag_tiles']} tiles)"
        )
    for metric in report.metrics:
        if metric["statistic"] in {
            "auc",
            "accuracy",
            "balanced_accuracy",
            "quadratic_weighted_kappa",
        }:
            value = "-" if metric["value"] is None else f"{metric['value']:.3f}"
            ci = (
                f" [{metric['low']:.3f}, {metric['high']:.3f}]"
                if metric["low"] is not None and metric["high"] is not None
                else ""
            )
            print(
                f"  {metric['split']:11s} {metric['statistic']:25s} {value}{ci} ({metric['n_slides']} slides)"
            )
    print(f"  report: {report.report_path}")
    _print_failures(report.failures)
    return 1 if (args.strict and report.failures) else 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from engine.evaluate.maps import evaluate_maps, summary_lines
    from engine.evaluate.params import MapEvalParams

    params = _stage_params(
        args,
        "evaluate",
        MapEvalParams,
        {
            "positive_label": args.positive_label,
            "detection_threshold": args.detection_threshold,
            "froc_mode": args.froc_mode,
            "splits": args.splits,
        },
    )
    report = evaluate_maps(
        Path(args.root), args.model, Path(args.manifest), params, address=args.address
    )
    print(
        f"evaluate run {report.run_id}: model_id {report.model_id}, {len(report.slide_rows)} slides, "
        f"{len(report.lesion_rows)} detections in {report.seconds:.1f}s"
    )
    for line in summary_lines(report):
        print(line)
    print(f"  report: {report.report_path}")
    _print_failures(report.failures)
    return 1 if (args.strict and report.failures) else 0


def _cmd_tiles(args: argparse.Namespace) -> int:
    from engine.tiles.stage import write_tiles

    report = write_tiles(Path(args.root), args.model, slide_ids=args.slides, address=args.address)
    print(
        f"tiles run {report.run_id}: {report.tiles} tiles of {len(report.slides)} slides into "
        f"tables/tiles (model_id {report.model_id}) and tile GeoJSON in {report.seconds:.1f}s"
    )
    _print_failures(report.failures)
    return 1 if (args.strict and report.failures) else 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from engine.bench import run_benchmark

    return run_benchmark(
        args.stage,
        Path(args.workdir) if args.workdir else None,
        quick=args.quick,
        slides=args.slides,
        wsinfer_python=args.wsinfer_python,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slidefleet", description="Score whole-slide-image cohorts on Ray."
    )
    parser.add_argument("--version", action="version", version=f"slidefleet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="write a synthetic cohort of pyramidal TIFF slides")
    synth.add_argument("--slides", type=int, required=True, help="number of slides")
    synth.add_argument("--out", required=True, help="output folder (manifest.csv is written there)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--mpp", type=float, default=0.5, help="microns per pixel at level 0")
    synth.add_argument(
        "--width-px", type=int, default=None, help="fixed slide width (default: a mix)"
    )
    synth.add_argument(
        "--height-px", type=int, default=None, help="fixed slide height (default: a mix)"
    )
    synth.set_defaults(handler=_cmd_synth)

    ingest = commands.add_parser("ingest", help="convert a manifest's slides into OME-Zarr stores")
    ingest.add_argument("manifest", help="manifest CSV or Parquet")
    ingest.add_argument("--root", required=True, help="fleet root folder")
    ingest.add_argument(
        "--config", default=None, help="job config (YAML/TOML/JSON) with an 'ingest' section"
    )
    ingest.add_argument(
        "--address", default=None, help="Ray cluster address (default: start a local Ray)"
    )
    ingest.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray")
    ingest.add_argument("--strict", action="store_true", help="exit 1 if any slide failed")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")
    ingest.set_defaults(handler=_cmd_ingest)

    models = commands.add_parser("models", help="register, list and make demo models")
    models_commands = models.add_subparsers(dest="models_command", required=True)
    models_add = models_commands.add_parser(
        "add", help="register a TorchScript / torch.export file with its card"
    )
    models_add.add_argument("model_file", help="TorchScript (.pt) or torch.export (.pt2) file")
    models_add.add_argument(
        "--card", required=True, help="model card JSON, or a WSInfer config.json"
    )
    models_add.add_argument(
        "--name", default=None, help="model name (needed for a WSInfer config.json)"
    )
    models_add.add_argument(
        "--version", default=None, help="model version (needed for a WSInfer config.json)"
    )
    models_add.add_argument("--root", required=True, help="fleet root folder")
    models_list = models_commands.add_parser("list", help="show registered models")
    models_list.add_argument("--root", required=True, help="fleet root folder")
    models_demo = models_commands.add_parser(
        "demo", help="train and register the demo models (seconds, CPU)"
    )
    models_demo.add_argument("--root", required=True, help="fleet root folder")
    models_demo.add_argument("--seed", type=int, default=0)
    models.set_defaults(handler=_cmd_models)

    infer = commands.add_parser("infer", help="score ingested slides with a model on Ray actors")
    infer.add_argument("--model", required=True, help="registered model, name[:version]")
    infer.add_argument("--root", required=True, help="fleet root folder")
    infer.add_argument("--config", default=None, help="job config with an 'infer' section")
    infer.add_argument("--slides", nargs="*", default=None, help="only these slide IDs")
    infer.add_argument("--batch-size", type=int, default=None, help="infer.batch_size")
    infer.add_argument(
        "--tta", choices=["none", "flips", "dihedral"], default=None, help="infer.tta"
    )
    infer.add_argument(
        "--gpus-per-actor", type=float, default=None, help="infer.gpus_per_actor (0.5 packs two)"
    )
    infer.add_argument("--cpus-per-actor", type=float, default=None, help="infer.cpus_per_actor")
    infer.add_argument("--max-actors", type=int, default=None, help="infer.max_actors")
    infer.add_argument(
        "--device",
        choices=["auto", "gpu", "cpu"],
        default=None,
        help="infer.device: auto (GPUs if the cluster has or can get them), gpu (never CPUs), cpu",
    )
    infer.add_argument("--no-gpus", action="store_true", help="same as --device cpu")
    infer.add_argument(
        "--address", default=None, help="Ray cluster address (default: start a local Ray)"
    )
    infer.add_argument("--strict", action="store_true", help="exit 1 if any slide failed")
    infer.add_argument("--quiet", action="store_true", help="no progress bar")
    infer.set_defaults(handler=_cmd_infer)

    post = commands.add_parser(
        "post", help="cohort post-processing with Dask: thresholds, regions, metrics"
    )
    post.add_argument("--model", required=True, help="registered model, name[:version]")
    post.add_argument("--root", required=True, help="fleet root folder")
    post.add_argument("--config", default=None, help="job config with a 'post' section")
    post.add_argument(
        "--dask-address", default=None, help="Dask scheduler (default: a local cluster)"
    )
    post.add_argument("--strict", action="store_true", help="exit 1 if any slide failed")
    post.add_argument("--quiet", action="store_true", help="no progress bar")
    post.set_defaults(handler=_cmd_post)

    views = commands.add_parser(
        "views", help="heatmaps, overlays, QuPath GeoJSON and the cohort report"
    )
    views.add_argument("--model", required=True, help="registered model, name[:version]")
    views.add_argument("--root", required=True, help="fleet root folder")
    views.add_argument("--config", default=None, help="job config with a 'view' section")
    views.add_argument("--slides", nargs="*", default=None, help="only these slide IDs")
    views.set_defaults(handler=_cmd_views)

    run = commands.add_parser("run", help="ingest, QC, infer, post and views in one go (streamed)")
    run.add_argument(
        "manifest", nargs="?", default=None, help="manifest CSV/Parquet (or 'manifest' in --config)"
    )
    run.add_argument(
        "--model", action="append", default=None, help="model name[:version] (repeatable)"
    )
    run.add_argument("--root", default=None, help="fleet root folder (or 'root' in --config)")
    run.add_argument(
        "--config",
        default=None,
        help="job config file (YAML/TOML/JSON), schemas/job-config.schema.json",
    )
    run.add_argument(
        "--address", default=None, help="Ray cluster address (default: start a local Ray)"
    )
    run.add_argument(
        "--dask-address", default=None, help="Dask scheduler for post (default: local)"
    )
    run.add_argument(
        "--device",
        choices=["auto", "gpu", "cpu"],
        default=None,
        help="infer.device: auto (GPUs if the cluster has or can get them), gpu (never CPUs), cpu",
    )
    run.add_argument(
        "--demo-models", action="store_true", help="train and register the demo models first"
    )
    run.add_argument("--no-views", action="store_true", help="skip heatmaps and the report")
    run.add_argument("--strict", action="store_true", help="exit 1 if any slide failed any stage")
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="retry slides whose last attempt failed on the same inputs (default: skip them)",
    )
    run.add_argument(
        "--no-stream",
        action="store_true",
        help="run each stage over the whole cohort before the next (default: stages overlap)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(handler=_cmd_run)

    reprocess = commands.add_parser(
        "reprocess", help="recompute exactly what new models or parameters made stale"
    )
    reprocess.add_argument(
        "--root", required=True, help="fleet root folder (made by `slidefleet run`)"
    )
    reprocess.add_argument(
        "--config",
        default=None,
        help="changed job config (its stage sections replace the stored ones)",
    )
    reprocess.add_argument("--dry-run", action="store_true", help="print the plan only")
    reprocess.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (default: the job's, else RAY_ADDRESS, else a local Ray)",
    )
    reprocess.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 if any slide failed any stage (also when the job was run with strict)",
    )
    reprocess.add_argument(
        "--retry-failed",
        action="store_true",
        help="retry slides whose last attempt failed on the same inputs (default: skip them)",
    )
    reprocess.add_argument("--quiet", action="store_true", help="no progress bars")
    reprocess.set_defaults(handler=_cmd_reprocess)

    watch = commands.add_parser("watch", help="poll for new model versions / inputs and reprocess")
    watch.add_argument("--root", required=True, help="fleet root folder")
    watch.add_argument(
        "--every", type=_parse_duration_s, default=900.0, help="poll interval, e.g. 15m (default)"
    )
    watch.add_argument(
        "--max-runs", type=int, default=None, help="stop after N polls (default: forever)"
    )
    watch.set_defaults(handler=_cmd_watch)

    qc_cmd = commands.add_parser(
        "qc", help="slide and annotation QC of ingested slides into tables/qc"
    )
    qc_cmd.add_argument("--root", required=True, help="fleet root folder")
    qc_cmd.add_argument(
        "--config", default=None, help="job config with 'qc' (and 'ingest') sections"
    )
    qc_cmd.add_argument(
        "--pixel-um", type=float, default=None, help="resolution slides are judged at"
    )
    qc_cmd.add_argument(
        "--exclude", nargs="*", default=None, help="flags that keep a slide out of infer"
    )
    qc_cmd.add_argument(
        "--address", default=None, help="Ray cluster address (default: start a local Ray)"
    )
    qc_cmd.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray")
    qc_cmd.add_argument(
        "--strict", action="store_true", help="exit 1 if any slide failed or was excluded"
    )
    qc_cmd.add_argument("--quiet", action="store_true", help="no progress bar")
    qc_cmd.set_defaults(handler=_cmd_qc)

    split = commands.add_parser(
        "split", help="write the manifest with a stratified, seeded train/calibration/test split"
    )
    split.add_argument("manifest", help="manifest CSV or Parquet")
    split.add_argument("--out", required=True, help="the new manifest (CSV or Parquet by suffix)")
    split.add_argument(
        "--fractions",
        type=float,
        nargs=3,
        default=(0.6, 0.2, 0.2),
        metavar=("TRAIN", "CALIBRATION", "TEST"),
        help="fractions of groups per split (default 0.6 0.2 0.2)",
    )
    split.add_argument("--seed", type=int, default=0)
    split.add_argument(
        "--stratify-by", default=None, help="stratum column (default: label, else burden)"
    )
    split.add_argument(
        "--site-column", default=None, help="provider/scanner column crossed with the stratum"
    )
    split.add_argument(
        "--group-by",
        default=None,
        help="patient/case column kept whole (default: patient_id, case_id)",
    )
    split.set_defaults(handler=_cmd_split)

    mil = commands.add_parser(
        "mil", help="attention MIL: slide labels from bags of tile embeddings"
    )
    mil_commands = mil.add_subparsers(dest="mil_command", required=True)
    for verb, text in (
        ("train", "train on the manifest's train split, select on calibration, register"),
        ("predict", "predict slides: tables/slide_predictions, attention maps, slide AUC"),
    ):
        sub = mil_commands.add_parser(verb, help=text)
        sub.add_argument("--root", required=True, help="fleet root folder")
        sub.add_argument("--manifest", required=True, help="manifest with split and label columns")
        sub.add_argument("--config", default=None, help="job config with a 'mil' section")
        if verb == "train":
            # How bags are built is part of the trained model (its card); predict reads it there.
            sub.add_argument(
                "--features-model", default=None, help="mil.bags.features_model (an extractor)"
            )
            sub.add_argument(
                "--score-model", default=None, help="mil.bags.score_model (picks top-K tiles)"
            )
            sub.add_argument(
                "--selection",
                choices=["top_k", "all_tissue"],
                default=None,
                help="mil.bags.selection",
            )
            sub.add_argument("--k", type=int, default=None, help="mil.bags.k")
            sub.add_argument("--epochs", type=int, default=None, help="mil.epochs")
            sub.add_argument("--name", default=None, help="mil.name (the registered MIL model)")
        sub.add_argument(
            "--address", default=None, help="Ray cluster address (default: start a local Ray)"
        )
        if verb == "predict":
            sub.add_argument("--model", required=True, help="MIL model, name[:version]")
            sub.add_argument("--splits", nargs="*", default=None, help="only these splits")
            sub.add_argument("--strict", action="store_true", help="exit 1 if any slide failed")
    mil.set_defaults(handler=_cmd_mil)

    evaluate = commands.add_parser(
        "evaluate", help="slide AUC from score maps' maxima and CAMELYON16 lesion FROC"
    )
    evaluate.add_argument("--model", required=True, help="registered model, name[:version]")
    evaluate.add_argument("--root", required=True, help="fleet root folder")
    evaluate.add_argument("--manifest", required=True, help="manifest with split and label columns")
    evaluate.add_argument("--config", default=None, help="job config with an 'evaluate' section")
    evaluate.add_argument(
        "--positive-label", default=None, help="label of a positive slide (tumor)"
    )
    evaluate.add_argument(
        "--detection-threshold", type=float, default=None, help="map score of a detection"
    )
    evaluate.add_argument("--froc-mode", choices=["challenge", "all_detections"], default=None)
    evaluate.add_argument("--splits", nargs="*", default=None, help="only these splits")
    evaluate.add_argument(
        "--address", default=None, help="Ray cluster address (default: start a local Ray)"
    )
    evaluate.add_argument("--strict", action="store_true", help="exit 1 if any slide failed")
    evaluate.set_defaults(handler=_cmd_evaluate)

    tiles = commands.add_parser(
        "tiles",
        help="tables/tiles and tile-level QuPath GeoJSON of a patch classifier or extractor",
    )
    tiles.add_argument("--model", required=True, help="registered model, name[:version]")
    tiles.add_argument("--root", required=True, help="fleet root folder")
    tiles.add_argument("--slides", nargs="*", default=None, help="only these slide IDs")
    tiles.add_argument(
        "--address", default=None, help="Ray cluster address (default: start a local Ray)"
    )
    tiles.add_argument("--strict", action="store_true", help="exit 1 if any slide failed")
    tiles.set_defaults(handler=_cmd_tiles)

    bench = commands.add_parser("bench", help="measure a stage against its floor (prints ratios)")
    bench.add_argument(
        "stage",
        choices=["ingest", "infer", "post", "qc", "storage", "cluster", "cohort", "wsinfer"],
        help="stage to benchmark (storage: the compact JPEG mode vs lossless; cluster: "
        "fake autoscaler scale-up and driver memory; cohort: a whole run, streamed vs staged; "
        "wsinfer: a first pass against WSInfer on the same slides and model)",
    )
    bench.add_argument(
        "--slides",
        type=int,
        nargs="+",
        default=None,
        help="cohort: slide counts to run (default 10 100; --quick 10)",
    )
    bench.add_argument(
        "--workdir", default=None, help="where to write generated slides (default: a temp dir)"
    )
    bench.add_argument("--quick", action="store_true", help="smaller slides (a smoke run)")
    bench.add_argument(
        "--wsinfer-python",
        default=None,
        help="wsinfer: the python of an environment with WSInfer installed "
        "(or $SLIDEFLEET_WSINFER_PYTHON)",
    )
    bench.set_defaults(handler=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from engine.errors import OutputWriteError, SlideFleetError

    try:
        return int(args.handler(args))
    except OutputWriteError as exc:
        print(f"slidefleet: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_OUTPUT_NOT_WRITTEN
    except SlideFleetError as exc:
        print(f"slidefleet: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
