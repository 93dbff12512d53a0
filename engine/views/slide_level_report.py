"""The slide-level report: ``views/slide-level/<model_id>/report.html``, self-contained.

Sections: slide-level figures (AUC with its bootstrap 95 % CI, accuracy, balanced accuracy,
quadratic-weighted kappa) per split, the confusion matrix, the lesion FROC curve with CAMELYON16's
read-off, and the slide predictions with each slide's top-attention tiles cut from its store.
Kept apart from the cohort report's module so the two can change independently; it reuses its
styling and escaping.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as pads

from engine.store import FleetLayout
from engine.store.atomic import atomic_write_bytes
from engine.store.slide_store import SlideStore
from engine.views.report import CSS, data_uri

REPORT_DIR = "slide-level"
TILE_THUMB_PX = 96


def _e(value: Any) -> str:
    return html.escape(str(value))


def _f(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{float(value):.{digits}f}"


def _rows(root: Path, table: str, model_id: str) -> list[dict[str, Any]]:
    directory = root / "tables" / table / f"model_id={model_id}"
    if not directory.is_dir():
        return []
    rows = (
        pads.dataset(directory, format="parquet", exclude_invalid_files=True).to_table().to_pylist()
    )
    if not rows:
        return rows
    latest = max(r["run_id"] for r in rows)  # run ids sort by time: the newest run's rows
    return [r for r in rows if r["run_id"] == latest]


def froc_chart(curve: Sequence[Mapping[str, Any]], at_rate: Sequence[Mapping[str, Any]]) -> bytes:
    """FROC curve (sensitivity against mean FPs per slide, log x) with the six read-off points."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.2, 3.2), dpi=110, layout="constrained")
    ax = figure.add_subplot()
    fps = np.array([r["fp_per_slide"] for r in curve], float)
    sens = np.array([r["sensitivity"] for r in curve], float)
    ax.step(np.maximum(fps, 1e-2), sens, where="post", color="#1f77b4", label="FROC curve")
    ax.plot(
        [r["fp_per_slide"] for r in at_rate],
        [r["sensitivity"] for r in at_rate],
        "o",
        color="#d62728",
        label="1/4 … 8 FPs per slide",
    )
    ax.set_xscale("log")
    ax.set_xlim(1e-2, max(16.0, float(fps.max(initial=1.0)) * 1.2))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("mean false positives per slide")
    ax.set_ylabel("lesion sensitivity")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def tile_thumbnail(
    store: SlideStore, box: Mapping[str, Any], size_px: int = TILE_THUMB_PX
) -> bytes:
    """PNG of a level-0 box, read from the store's level nearest ``size_px`` across the box."""
    from PIL import Image

    width_um = float(box["width"]) * store.mpp_x
    level = store.finest_level_not_coarser_than(width_um / size_px)
    fx, fy = level.scale_x_um / store.mpp_x, level.scale_y_um / store.mpp_y
    x0, y0 = int(box["x"] / fx), int(box["y"] / fy)
    x1, y1 = (
        int(np.ceil((box["x"] + box["width"]) / fx)),
        int(np.ceil((box["y"] + box["height"]) / fy)),
    )
    region = np.asarray(store.image(level)[:, y0:y1, x0:x1])
    image = Image.fromarray(np.ascontiguousarray(np.moveaxis(region, 0, -1))).resize(
        (size_px, size_px)
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _metrics_section(metrics: Sequence[Mapping[str, Any]]) -> str:
    names = ("auc", "accuracy", "balanced_accuracy", "quadratic_weighted_kappa")
    keyed = {(m["source"], m["split"], m["statistic"]): m for m in metrics}
    groups = sorted(
        {(m["source"], m["split"]) for m in metrics},
        key=lambda g: (
            g[0],
            ("test", "calibration", "train", "all").index(g[1])
            if g[1] in ("test", "calibration", "train", "all")
            else 9,
        ),
    )
    body = []
    for source, split in groups:
        cells = []
        for name in names:
            m = keyed.get((source, split, name))
            if m is None:
                cells.append("<td>–</td>")
            elif name == "auc" and m["low"] is not None:
                cells.append(
                    f"<td>{_f(m['value'])} <span class='note'>[{_f(m['low'])}, {_f(m['high'])}]</span></td>"
                )
            else:
                cells.append(f"<td>{_f(m['value'])}</td>")
        n = next(m["n_slides"] for m in metrics if (m["source"], m["split"]) == (source, split))
        body.append(
            f"<tr><td>{_e(source)}</td><td>{_e(split)}</td><td>{n}</td>{''.join(cells)}</tr>"
        )
    if not body:
        return '<section id="slide-metrics"><h2>Slide-level figures</h2><p class="note">No labelled slide.</p></section>'
    return (
        '<section id="slide-metrics"><h2>Slide-level figures</h2>'
        "<p>AUC with its percentile bootstrap 95 % CI over slides; quadratic-weighted kappa is "
        "PANDA's metric for ordinal grades.</p><table><thead><tr><th>source</th><th>split</th>"
        "<th>slides</th><th>AUC [95 % CI]</th><th>accuracy</th><th>balanced accuracy</th>"
        f"<th>QWK</th></tr></thead><tbody>{''.join(body)}</tbody></table></section>"
    )


def _confusion_section(metrics: Sequence[Mapping[str, Any]]) -> str:
    cells = [m for m in metrics if m["statistic"] == "confusion"]
    if not cells:
        return ""
    split = "test" if any(m["split"] == "test" for m in cells) else "all"
    cells = [m for m in cells if m["split"] == split]
    classes = list(dict.fromkeys(m["true_class"] for m in cells))
    value = {(m["true_class"], m["predicted_class"]): int(m["value"]) for m in cells}
    head = "".join(f"<th>{_e(c)}</th>" for c in classes)
    body = "".join(
        f"<tr><th>{_e(t)}</th>"
        + "".join(f"<td>{value.get((t, p), 0)}</td>" for p in classes)
        + "</tr>"
        for t in classes
    )
    return (
        f'<section id="slide-confusion"><h2>Confusion ({_e(split)} split)</h2>'
        f"<p>Rows: true label; columns: predicted class.</p><table><thead><tr><th></th>{head}</tr>"
        f"</thead><tbody>{body}</tbody></table></section>"
    )


def _froc_section(froc_rows: Sequence[Mapping[str, Any]]) -> str:
    rows = [r for r in froc_rows if r["split"] == "all"]
    if not rows:
        return ""
    curve = sorted(
        (r for r in rows if r["kind"] == "curve"),
        key=lambda r: (r["fp_per_slide"], r["sensitivity"]),
    )
    at_rate = sorted((r for r in rows if r["kind"] == "at_rate"), key=lambda r: r["fp_per_slide"])
    chart = data_uri("image/png", froc_chart(curve, at_rate))
    table = "".join(
        f"<tr><td>{r['fp_per_slide']:g}</td><td>{_f(r['sensitivity'])}</td></tr>" for r in at_rate
    )
    first = rows[0]
    return (
        '<section id="froc"><h2>Lesion FROC (CAMELYON16 task 2)</h2>'
        f"<p>FROC score <b>{_f(first['score'])}</b> (mean sensitivity at 1/4, 1/2, 1, 2, 4 and 8 "
        f"false positives per slide) over {first['n_slides']} slides and {first['n_lesions']} "
        "lesions; isolated-tumour-cell regions count neither way.</p>"
        f'<div class="pair"><img class="figure" alt="FROC curve" src="{chart}">'
        "<table><thead><tr><th>FPs / slide</th><th>sensitivity</th></tr></thead>"
        f"<tbody>{table}</tbody></table></div></section>"
    )


def _predictions_section(layout: FleetLayout, predictions: Sequence[Mapping[str, Any]]) -> str:
    if not predictions:
        return ""
    body = []
    for row in sorted(predictions, key=lambda r: (r["split"] or "", -float(r["score"]))):
        thumbs = []
        try:
            store = SlideStore.open(layout.slide_store(row["slide_id"]))
            for tile in row["top_tiles"] or []:
                uri = data_uri("image/png", tile_thumbnail(store, tile))
                thumbs.append(
                    f'<img class="tile" alt="tile at {tile["x"]},{tile["y"]}" title="attention '
                    f'{tile["attention"]:.3f} at ({tile["x"]}, {tile["y"]})" src="{uri}">'
                )
        except Exception as exc:  # noqa: BLE001 - a missing store must not lose the whole report
            thumbs.append(f"<span class='note'>tiles unavailable: {_e(type(exc).__name__)}</span>")
        body.append(
            f"<tr><td>{_e(row['slide_id'])}</td><td>{_e(row['split'] or '–')}</td>"
            f"<td>{_e(row['true_label'] or '–')}</td><td>{_e(row['predicted_class'])}</td>"
            f"<td>{_f(row['score'])}</td><td>{_f(row['attention_entropy'], 2)}</td>"
            f"<td>{row['bag_tiles']}</td><td>{''.join(thumbs)}</td></tr>"
        )
    return (
        '<section id="slide-predictions"><h2>Slide predictions and top-attention tiles</h2>'
        "<p>Tiles the MIL model attended to most, most attended first (hover for the weight); "
        "low attention entropy means few tiles decided.</p><table><thead><tr><th>slide</th>"
        "<th>split</th><th>truth</th><th>predicted</th><th>score</th><th>attention entropy</th>"
        f"<th>bag tiles</th><th>top tiles</th></tr></thead><tbody>{''.join(body)}</tbody></table></section>"
    )


def build_slide_level_html(layout: FleetLayout, model_id: str, title: str) -> str:
    metrics = _rows(layout.root, "slide_metrics", model_id)
    sections = [
        _metrics_section(metrics),
        _confusion_section(metrics),
        _froc_section(_rows(layout.root, "froc", model_id)),
        _predictions_section(layout, _rows(layout.root, "slide_predictions", model_id)),
    ]
    style = CSS + "img.tile { width: 64px; height: 64px; margin: 0 3px; border: 1px solid #ccc; }"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'\">"
        f"<title>{_e(title)}</title><style>{style}</style></head><body><header><h1>{_e(title)}</h1>"
        f'<div class="meta">model_id <code>{_e(model_id)}</code></div></header>'
        f"<main>{''.join(s for s in sections if s)}</main></body></html>\n"
    )


def write_slide_level_report(root: Path | str, model_id: str, title: str) -> Path:
    """Write ``views/slide-level/<model_id>/report.html`` from the tables; returns its path."""
    layout = FleetLayout(Path(root))
    path = layout.views_dir / REPORT_DIR / model_id / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, build_slide_level_html(layout, model_id, title).encode())
    return path
