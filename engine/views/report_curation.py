"""Report sections for curating a cohort: slide and annotation QC, strata per split, patch
galleries with explanations, and the multi-class pixel confusion matrix (all tissue and
non-homogeneous tiles). Pure: rows and image bytes in, HTML out (see :mod:`engine.views.report`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from engine.metrics.patch_confusion import percent_of_truth
from engine.views.report import _e, _fmt, _img, _number

QC_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # key, header, format: "num", "pct" (fraction shown in %), "int"
    ("tissue_area_mm2", "Tissue mm²", "num"),
    ("brightness", "Brightness", "num"),
    ("contrast", "Contrast", "num"),
    ("saturation", "Saturation", "num"),
    ("hematoxylin_od", "H OD", "num"),
    ("eosin_od", "E OD", "num"),
    ("laplacian_var_median", "Sharpness (Laplacian var.)", "sci"),
    ("blurred_tile_fraction", "Blurred tiles", "pct"),
    ("pen_fraction", "Pen", "pct"),
    ("dark_fraction", "Dark debris", "pct"),
    ("white_fraction", "White", "pct"),
    ("annotation_objects", "Objects", "int"),
    ("annotation_density_per_mm2", "Objects / mm² tissue", "num"),
    ("annotation_area_um2_median", "Median object µm²", "num"),
    ("annotation_positive_fraction", "Annotated % of tissue", "pct"),
    ("annotation_degenerate", "Degenerate", "int"),
    ("annotation_outside_slide", "Beyond slide", "int"),
    ("annotation_off_tissue", "Off tissue", "int"),
)


def _cell(value: Any, kind: str) -> str:
    number = _number(value)
    sort_value = "" if number is None else repr(number)
    if number is None:
        shown = "—"
    elif kind == "pct":
        shown = f"{100 * number:.2f} %"
    elif kind == "int":
        shown = str(int(round(number)))
    elif kind == "sci":
        shown = f"{number:.3g}"
    else:
        shown = _fmt(number)
    return f'<td class=num data-value="{sort_value}">{shown}</td>'


def qc_section(rows: Sequence[Mapping[str, Any]]) -> str:
    """Per-slide QC measures with flags and reasons (the newest ``tables/qc`` row per slide)."""
    if not rows:
        return (
            '<section id="qc"><h2>Slide and annotation QC</h2><p class="note">QC has not run on '
            "this fleet (`slidefleet qc`, or qc.enabled in `slidefleet run`).</p></section>"
        )
    pixel = sorted({_fmt(r.get("pixel_um")) for r in rows})
    flagged = [r for r in rows if r.get("flags")]
    excluded = [r for r in rows if r.get("excluded")]
    header = (
        '<th data-key="slide_id" data-type="text" aria-sort="none">Slide</th>'
        '<th data-key="flags" data-type="text" aria-sort="none">Flags</th>'
        + "".join(
            f'<th data-key="{key}" data-type="number" aria-sort="none">{_e(label)}</th>'
            for key, label, _ in QC_COLUMNS
        )
    )
    body = []
    for row in sorted(rows, key=lambda r: str(r["slide_id"])):
        flags = list(row.get("flags") or [])
        state = " (excluded)" if row.get("excluded") else ""
        reasons = "".join(f"<li>{_e(reason)}</li>" for reason in row.get("reasons") or [])
        flag_cell = (
            f'<td class="flags" data-value="{_e(",".join(flags))}"><details><summary>'
            f"{_e(', '.join(flags) + state)}</summary><ul>{reasons}</ul></details></td>"
            if flags
            else '<td class="flags" data-value="">—</td>'
        )
        cells = "".join(_cell(row.get(key), kind) for key, _, kind in QC_COLUMNS)
        body.append(
            f'<tr data-slide="{_e(row["slide_id"])}" data-flags="{_e(",".join(flags))}" '
            f'data-excluded="{str(bool(row.get("excluded"))).lower()}"><th scope=row class=nowrap>'
            f"{_e(row['slide_id'])}</th>{flag_cell}{cells}</tr>"
        )
    counts: dict[str, int] = {}
    for row in flagged:
        for flag in row["flags"]:
            counts[flag] = counts.get(flag, 0) + 1
    summary = ", ".join(f"{flag} {n}" for flag, n in sorted(counts.items())) or "none"
    return (
        '<section id="qc"><h2>Slide and annotation QC</h2>'
        f'<p class="note">Measured at {_e(", ".join(pixel))} µm/px on tissue. {len(flagged)} of '
        f"{len(rows)} slides flagged ({_e(summary)}); {len(excluded)} kept out of inference by "
        "qc.exclude. A flag means the measure is far from the cohort's median (robust z) or "
        "beyond an absolute limit; open a flag for its reason.</p>"
        '<div class="scroll"><table class="grid sortable" id="qc-table"><thead><tr>'
        f"{header}</tr></thead><tbody>{''.join(body)}</tbody></table></div></section>"
    )


def strata_section(
    slides: Sequence[Mapping[str, Any]], qc_rows: Sequence[Mapping[str, Any]]
) -> str:
    """Slides per split and burden stratum (and per split, QC-flagged slides)."""
    if not slides:
        return ""
    splits = sorted({str(r.get("split") or "none") for r in slides})
    strata = sorted({str(r.get("burden_stratum") or "none") for r in slides})
    counts: dict[tuple[str, str], int] = {}
    for row in slides:
        key = (str(row.get("split") or "none"), str(row.get("burden_stratum") or "none"))
        counts[key] = counts.get(key, 0) + 1
    flagged = {str(r["slide_id"]) for r in qc_rows if r.get("flags")}
    flagged_per_split: dict[str, int] = {}
    for row in slides:
        if str(row["slide_id"]) in flagged:
            split = str(row.get("split") or "none")
            flagged_per_split[split] = flagged_per_split.get(split, 0) + 1
    header = "".join(f"<th>{_e(s)}</th>" for s in strata)
    body = "".join(
        f'<tr data-split="{_e(split)}"><th scope=row>{_e(split)}</th>'
        + "".join(f"<td class=num>{counts.get((split, s), 0)}</td>" for s in strata)
        + f"<td class=num>{sum(counts.get((split, s), 0) for s in strata)}</td>"
        f"<td class=num>{flagged_per_split.get(split, 0)}</td></tr>"
        for split in splits
    )
    return (
        '<section id="split-strata"><h2>Strata per split</h2><p class="note">Slides per split and '
        "tumour-burden stratum (truth % of tissue), as scored; a split missing a stratum cannot "
        "measure it (`slidefleet split` stratifies by label or burden).</p>"
        '<table class="grid" id="split-strata-table"><thead><tr><th>Split</th>'
        f"{header}<th>Slides</th><th>QC-flagged</th></tr></thead><tbody>{body}</tbody></table></section>"
    )


def gallery_section(
    explanations: Sequence[Mapping[str, Any]],
    images: Mapping[str, tuple[str, bytes]],
    gallery_files: Mapping[str, str],
) -> str:
    """The galleries of the slides with the worst tiles, and every explained tile as a table."""
    if not explanations and not gallery_files:
        return ""
    methods = sorted({f"{r['method']} ({r['note']})" for r in explanations})
    seconds = [float(r["seconds"]) for r in explanations if _number(r.get("seconds")) is not None]
    timing = f" {np.mean(seconds):.3f} s per tile to explain." if seconds else ""
    figures = "".join(
        f'<figure data-slide="{_e(slide_id)}">{_img(mime, payload, f"Patch gallery of {slide_id}", "panel")}'
        f'<figcaption>{_e(slide_id)} (<a href="{_e(gallery_files.get(slide_id, ""))}">full size</a>)</figcaption></figure>'
        for slide_id, (mime, payload) in images.items()
    )
    body = "".join(
        f'<tr data-slide="{_e(r["slide_id"])}" data-kind="{_e(r["kind"])}"><td>{_e(r["slide_id"])}</td>'
        f"<td>{_e(r['kind'])}</td><td class=num>{int(r['rank'])}</td>"
        f"<td class=num>{r['x_um']:.0f}, {r['y_um']:.0f}</td><td class=num>{_fmt(r['mean_score'])}</td>"
        f"{_cell(r.get('fp_fraction'), 'pct')}{_cell(r.get('fn_fraction'), 'pct')}"
        f"<td>{_e(r['method'])}</td><td class=num>{_fmt(r['seconds'])}</td>"
        f'<td><a href="{_e(r["explanation_file"])}">map</a></td></tr>'
        for r in sorted(explanations, key=lambda r: (r["kind"], r["slide_id"], r["rank"]))
    )
    return (
        '<section id="galleries"><h2>Patch galleries and explanations</h2>'
        '<p class="note">Each row: image | predicted mask (cyan) | overlay with ground truth (green) '
        "and prediction (cyan) outlined | ground truth | heatmap | explanation (which pixels raised "
        "the score; brighter = more). Tiles: the top-scored, and the worst false positives and "
        f"false negatives against the threshold. Method: {_e('; '.join(methods) or '—')}.{_e(timing)}</p>"
        f"{figures}"
        '<div class="scroll"><table class="grid" id="explanation-table"><thead><tr><th>Slide</th>'
        "<th>Kind</th><th>Rank</th><th>x, y (µm)</th><th>Mean score</th><th>False pos.</th>"
        "<th>False neg.</th><th>Method</th><th>Seconds</th><th>File</th></tr></thead>"
        f"<tbody>{body}</tbody></table></div></section>"
    )


def _matrix_table(table_id: str, class_names: Sequence[str], matrix: np.ndarray) -> str:
    percent = percent_of_truth(matrix)
    header = "".join(f"<th>{_e(name)}</th>" for name in class_names)
    body = "".join(
        f"<tr><th scope=row>{_e(name)}</th>"
        + "".join(
            f'<td class=num data-value="{"" if np.isnan(v) else f"{v:.4f}"}">'
            f"{'—' if np.isnan(v) else f'{v:.1f}'}</td>"
            for v in percent[i]
        )
        + f"<td class=num>{int(matrix[i].sum())}</td></tr>"
        for i, name in enumerate(class_names)
    )
    return (
        f'<table class="grid confusion" id="{_e(table_id)}"><thead><tr><th>True \\ predicted</th>'
        f"{header}<th>Pixels</th></tr></thead><tbody>{body}</tbody></table>"
    )


def confusion_section(rows: Sequence[Mapping[str, Any]]) -> str:
    """Pixel confusion matrices in % of each true class, pooled over slides, per scope."""
    if not rows:
        return ""
    class_names = list(rows[0]["class_names"])
    splits = {str(r.get("split") or "none") for r in rows}
    scope_split = "test" if "test" in splits else None
    scoped = [r for r in rows if scope_split is None or r.get("split") == scope_split]
    parts = []
    for scope, title in (
        ("all_tissue", "All scored tissue"),
        ("non_homogeneous", "Non-homogeneous tiles only (more than one true class)"),
    ):
        chosen = [r for r in scoped if r["scope"] == scope]
        if not chosen:
            continue
        matrix = np.sum([np.asarray(r["matrix"], np.int64) for r in chosen], axis=0)
        tiles = sum(int(r["tiles"]) for r in chosen)
        parts.append(
            f"<h3>{_e(title)} <span class=count>({len(chosen)} slides, {tiles} tiles)</span></h3>"
            + _matrix_table(f"confusion-{scope}", class_names, matrix)
        )
    where = "test split" if scope_split else "all slides"
    return (
        '<section id="confusion"><h2>Pixel confusion matrix</h2>'
        f'<p class="note">Pooled over the {_e(where)}; each row is a true class, its cells the % '
        "of that class's pixels given each predicted (argmax) class. Borders between classes, "
        "where errors gather, are the non-homogeneous tiles.</p>"
        f"{''.join(parts)}</section>"
    )
