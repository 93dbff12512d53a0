"""The cohort report: one self-contained ``report.html`` (inline CSS and JS, images as data URIs).

:func:`build_report_html` is pure: it takes the tables' rows and image bytes and returns the
page; nothing in it reaches the network or the file system. Undefined metrics are shown as
"—" and sort last, never as 0 or 1.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.metrics.cohort import BURDEN_LABELS, BURDEN_STRATA, cohort_summary, headline_split
from engine.views import charts

SUMMARY_STATISTICS: tuple[tuple[str, str], ...] = (
    ("micro_iou", "Micro IoU"),
    ("macro_iou", "Macro IoU"),
    ("median_iou", "Median IoU"),
    ("micro_dice", "Micro Dice"),
    ("macro_dice", "Macro Dice"),
    ("macro_pixel_auc", "Macro pixel AUC"),
    ("macro_patch_auc", "Macro patch AUC"),
    ("micro_miou", "Micro mIoU"),
    ("macro_miou", "Macro mIoU"),
    ("micro_macro_dice", "Micro macro-Dice"),
)

SLIDE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # key, header, type ("text" or "number")
    ("slide_id", "Slide", "text"),
    ("split", "Split", "text"),
    ("burden_stratum", "Burden", "text"),
    ("case", "Case", "text"),
    ("iou", "IoU", "number"),
    ("dice", "Dice", "number"),
    ("precision", "Precision", "number"),
    ("recall", "Recall", "number"),
    ("pixel_auc", "Pixel AUC", "number"),
    ("tumour_pct_of_tissue", "Predicted % of tissue", "number"),
    ("truth_pct_of_tissue", "True % of tissue", "number"),
    ("n_regions", "Regions", "number"),
    ("tumour_mm2", "Predicted mm²", "number"),
)
MULTICLASS_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("miou", "mIoU", "number"),
    ("macro_dice", "Macro Dice (classes)", "number"),
)


@dataclass
class ReportInputs:
    """Everything the report shows; rows are the post tables' rows as dicts."""

    model_ref: str
    model_id: str
    generated_at: str
    slides: list[dict[str, Any]] = field(default_factory=list)
    cohort: list[dict[str, Any]] = field(default_factory=list)
    thresholds: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    slide_files: dict[str, dict[str, str]] = field(default_factory=dict)
    """slide_id -> {"panel": name, "heatmap": name, "geojson": name} (files beside the report)."""
    panel_images: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    """slide_id -> (mime type, bytes) of its panel, for the best and worst slides."""
    provenance: dict[str, Any] = field(default_factory=dict)
    best_worst: int = 3
    extra_sections: list[tuple[str, str, str]] = field(default_factory=list)
    """(anchor, navigation label, HTML) of sections built elsewhere, shown before the failures."""


# --------------------------------------------------------------------------------------------
# Small formatting helpers


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _fmt(value: Any, digits: int = 3) -> str:
    f = _number(value)
    if f is None:
        return "—"
    if float(f).is_integer() and abs(f) < 1e6 and not isinstance(value, float):
        return str(int(f))
    return f"{f:.{digits}f}"


def _count(value: Any) -> str:
    f = _number(value)
    return "—" if f is None else str(int(round(f)))


def _threshold(value: Any) -> str:
    f = _number(value)
    return "—" if f is None else f"{f:.4g}"


def data_uri(mime: str, payload: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def _img(mime: str, payload: bytes, alt: str, css_class: str = "figure") -> str:
    return f'<img class="{css_class}" alt="{_e(alt)}" src="{data_uri(mime, payload)}">'


# --------------------------------------------------------------------------------------------
# Cohort figures


def _cohort_rows(inputs: ReportInputs) -> list[dict[str, Any]]:
    """The cohort table's rows, or the same figures computed from the slides rows when absent."""
    if inputs.cohort:
        return inputs.cohort
    rows = [r for r in inputs.slides if r.get("has_ground_truth") and r.get("tp") is not None]
    return cohort_summary(rows) if rows else []


def _statistics(
    cohort: Sequence[Mapping[str, Any]], split: str, burden: str
) -> dict[str, Mapping[str, Any]]:
    return {r["statistic"]: r for r in cohort if r["split"] == split and r["burden"] == burden}


def _headline_split(cohort: Sequence[Mapping[str, Any]]) -> str:
    return headline_split(cohort)


def _summary_section(inputs: ReportInputs, cohort: list[dict[str, Any]]) -> str:
    if not cohort:
        return (
            '<section id="summary"><h2>Summary</h2><p class="note">No cohort metrics: the post '
            "stage has not run for this model, or no slide has ground truth.</p></section>"
        )
    split = _headline_split(cohort)
    stats = _statistics(cohort, split, "all")
    present = {r["statistic"] for r in cohort}
    shown = [(key, label) for key, label in SUMMARY_STATISTICS if key in present]
    cards = []
    for key, label in shown:
        row = stats.get(key)
        if row is None:
            continue
        undefined = row.get("n_undefined") or 0
        without = row.get("n_slides_without_truth") or 0
        note = (
            f"n = {row['n_slides'] - without}"
            + (f", {undefined} undefined" if undefined else "")
            + (f"; {without} without ground truth" if without else "")
        )
        cards.append(
            f'<div class="card" data-statistic="{_e(key)}"><div class="value">{_fmt(row["value"])}</div>'
            f'<div class="label">{_e(label)}</div><div class="n">{_e(note)}</div></div>'
        )
    scope_note = (
        "Test split: slides not used to fit the threshold."
        if split == "test"
        else "All slides (no test split in the cohort)."
    )

    splits = ["all"] + sorted({r["split"] for r in cohort} - {"all"})
    header = "".join(f"<th>{_e(label)}</th>" for _, label in shown)
    body = []
    for s in splits:
        st = _statistics(cohort, s, "all")
        if not st:
            continue
        n = next(iter(st.values()))["n_slides"]
        cells = "".join(
            f"<td class=num>{_fmt(st[k]['value']) if k in st else '—'}</td>" for k, _ in shown
        )
        body.append(f"<tr><th scope=row>{_e(s)}</th><td class=num>{n}</td>{cells}</tr>")
    split_table = (
        f'<table class="grid" id="split-table"><thead><tr><th>Split</th><th>Slides</th>{header}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )

    strata_rows = []
    for burden in BURDEN_STRATA:
        st = _statistics(cohort, "all", burden)
        if not st:
            continue
        strata_rows.append(
            {
                "burden": burden,
                "n_slides": next(iter(st.values()))["n_slides"],
                **{
                    k: st[k]["value"] if k in st else None
                    for k in (
                        "micro_iou",
                        "macro_iou",
                        "macro_dice",
                        "macro_recall",
                        "n_case_fn_only",
                        "n_case_fp_only",
                    )
                },
            }
        )
    strata_body = "".join(
        f'<tr><th scope=row title="{_e(r["burden"])}">{_e(_burden_label(r["burden"]))}</th>'
        f"<td class=num>{r['n_slides']}</td>"
        f"<td class=num>{_fmt(r['micro_iou'])}</td><td class=num>{_fmt(r['macro_iou'])}</td>"
        f"<td class=num>{_fmt(r['macro_dice'])}</td><td class=num>{_fmt(r['macro_recall'])}</td>"
        f"<td class=num>{_count(r['n_case_fn_only'])}</td><td class=num>{_count(r['n_case_fp_only'])}</td></tr>"
        for r in strata_rows
    )
    strata_table = (
        '<table class="grid" id="strata-table"><thead><tr><th>Burden (truth % of tissue)</th><th>Slides</th>'
        "<th>Micro IoU</th><th>Macro IoU</th><th>Macro Dice</th><th>Macro recall</th>"
        "<th>Missed (fn only)</th><th>False alarm (fp only)</th></tr></thead>"
        f"<tbody>{strata_body}</tbody></table>"
    )
    charted = [
        r
        for r in strata_rows
        if any(r[k] is not None for k in ("micro_iou", "macro_iou", "macro_dice"))
    ]
    strata_chart = (
        _img("image/png", charts.strata_bars(charted), "IoU and Dice by tumour burden stratum")
        if charted
        else ""
    )
    return (
        '<section id="summary"><h2>Summary</h2>'
        f'<p class="note">{_e(scope_note)} Micro figures pool pixels (large slides weigh more); '
        "macro figures average slides. Undefined per-slide values are left out and counted.</p>"
        f'<h3>Headline ({_e(split)} split)</h3><div class="cards">{"".join(cards)}</div>'
        f"<h3>By split</h3>{split_table}"
        f'<h3>By tumour burden</h3><div class="pair">{strata_table}{strata_chart}</div></section>'
    )


def _burden_label(burden: str) -> str:
    """A burden stratum key with what it means, e.g. ``high (tumour > 2 % of tissue)``."""
    label = BURDEN_LABELS.get(burden)
    return f"{burden} ({label})" if label else burden


def _distribution_section(inputs: ReportInputs) -> str:
    by_stratum: dict[str, list[float]] = {}
    undefined: dict[str, int] = {}
    for row in inputs.slides:
        if not row.get("has_ground_truth", True):
            continue
        value = _number(row.get("iou"))
        stratum = str(row.get("burden_stratum") or "none")
        if value is None:
            case = str(row.get("case") or "unknown")
            undefined[case] = undefined.get(case, 0) + 1
        else:
            by_stratum.setdefault(stratum, []).append(value)
    if not inputs.slides:
        return ""
    note = ""
    if undefined:
        listed = ", ".join(f"{n} {case}" for case, n in sorted(undefined.items()))
        note = f'<p class="note">IoU undefined (not plotted): {_e(listed)}.</p>'
    return (
        '<section id="distribution"><h2>IoU distribution</h2>'
        f"{_img('image/png', charts.iou_distribution(by_stratum), 'Histogram of per-slide IoU by burden stratum')}"
        f"{note}</section>"
    )


def _threshold_section(inputs: ReportInputs) -> str:
    chosen = objective = score_kind = None
    if inputs.slides:
        first = inputs.slides[0]
        chosen = _number(first.get("threshold"))
        objective = first.get("threshold_objective")
        score_kind = first.get("score_kind")
    if not inputs.thresholds and chosen is None:
        return ""
    fitted_on = inputs.thresholds[0]["fitted_on"] if inputs.thresholds else None
    n_fitted = inputs.thresholds[0].get("n_slides_fitted") if inputs.thresholds else None
    marked = [r for r in inputs.thresholds if r.get("chosen_for")]
    text = (
        f"Threshold <strong id=chosen-threshold>{_threshold(chosen)}</strong> on "
        f"{_e(score_kind or 'scores')}"
        + (f", fitted for {_e(objective)}" if objective else "")
        + (f" on the {_e(fitted_on)} split" if fitted_on else "")
        + (f" ({_count(n_fitted)} slides)" if n_fitted is not None else "")
        + "."
    )
    if marked:
        text += (
            " Best on the sweep: "
            + "; ".join(f"{_e(r['chosen_for'])} at {_threshold(r['threshold'])}" for r in marked)
            + "."
        )
    return (
        f'<section id="threshold"><h2>Threshold sweep</h2><p>{text}</p>'
        f"{_img('image/png', charts.threshold_sweep(inputs.thresholds, chosen, objective, score_kind), 'Pooled IoU, F1 and Youden J against the threshold')}"
        "</section>"
    )


# --------------------------------------------------------------------------------------------
# Per-slide table, panels, failures, provenance


def _slides_section(inputs: ReportInputs) -> str:
    rows = inputs.slides or [{"slide_id": s} for s in sorted(inputs.slide_files)]
    if not rows:
        return '<section id="slides"><h2>Slides</h2><p class="note">No slide has results for this model.</p></section>'
    columns = SLIDE_COLUMNS + (
        MULTICLASS_COLUMNS if any(r.get("miou") is not None for r in rows) else ()
    )
    header = (
        "".join(
            f'<th data-key="{key}" data-type="{kind}" aria-sort="none" title="Sort by {_e(label)}">{_e(label)}</th>'
            for key, label, kind in columns
        )
        + "<th>Files</th>"
    )
    body = []
    for row in rows:
        cells = []
        for key, _, kind in columns:
            value = row.get(key)
            if kind == "number":
                number = _number(value)
                sort_value = "" if number is None else repr(number)
                cells.append(f'<td class=num data-value="{sort_value}">{_fmt(value)}</td>')
            else:
                text = "—" if value is None else str(value)
                cells.append(
                    f'<td class=nowrap data-value="{_e("" if value is None else value)}">{_e(text)}</td>'
                )
        files = inputs.slide_files.get(str(row.get("slide_id")), {})
        links = " ".join(
            f'<a href="{_e(name)}">{_e(kind)}</a>' for kind, name in sorted(files.items())
        )
        cells.append(f"<td class=nowrap>{links or '—'}</td>")
        body.append(f'<tr data-slide="{_e(row.get("slide_id"))}">{"".join(cells)}</tr>')
    return (
        f'<section id="slides"><h2>Slides <span class="count">({len(rows)})</span></h2>'
        '<p class="note">Click a column header to sort (again to reverse); undefined values stay last.</p>'
        f'<div class="scroll"><table class="grid sortable" id="slide-table"><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div></section>"
    )


def best_and_worst(slides: Sequence[Mapping[str, Any]], n: int) -> tuple[list[str], list[str]]:
    """Slide ids of the ``n`` best and ``n`` worst slides by IoU (defined IoU only, disjoint)."""
    ranked = sorted(
        (
            (float(r["iou"]), str(r["slide_id"]))
            for r in slides
            if _number(r.get("iou")) is not None
        ),
        key=lambda t: (-t[0], t[1]),
    )
    if n <= 0 or not ranked:
        return [], []
    best_n = min(n, (len(ranked) + 1) // 2)
    best = [s for _, s in ranked[:best_n]]
    worst = [s for _, s in reversed(ranked[best_n:])][:n]
    return best, worst


def _panels_section(inputs: ReportInputs) -> str:
    best, worst = best_and_worst(inputs.slides, inputs.best_worst)
    if not best and not worst:
        return ""
    by_id = {str(r["slide_id"]): r for r in inputs.slides}

    def block(title: str, ids: list[str], css: str) -> str:
        items = []
        for slide_id in ids:
            row = by_id[slide_id]
            caption = (
                f"{slide_id}: IoU {_fmt(row.get('iou'))}, Dice {_fmt(row.get('dice'))}, "
                f"burden {row.get('burden_stratum') or '—'}, case {row.get('case') or '—'}"
            )
            image = inputs.panel_images.get(slide_id)
            picture = (
                _img(
                    image[0],
                    image[1],
                    f"Panel of {slide_id}: ground truth, heatmap, overlay",
                    "panel",
                )
                if image
                else '<p class="note">(panel not rendered)</p>'
            )
            items.append(
                f'<figure data-slide="{_e(slide_id)}">{picture}<figcaption>{_e(caption)}</figcaption></figure>'
            )
        return f'<div class="{css}"><h3>{_e(title)}</h3>{"".join(items)}</div>'

    legend = (
        "<p class=note>Each panel: ground truth (green) on the slide | heatmap of the score "
        "(transparent off tissue) | heatmap over the slide with ground truth (green) and "
        "predicted regions (cyan) outlined.</p>"
    )
    return (
        f'<section id="panels"><h2>Best and worst slides</h2>{legend}'
        f"{block('Best by IoU', best, 'best')}{block('Worst by IoU', worst, 'worst')}</section>"
    )


def _failures_section(inputs: ReportInputs) -> str:
    if not inputs.failures:
        return '<section id="failures"><h2>Failures <span class="count">(0)</span></h2><p>No failures.</p></section>'
    body = "".join(
        f'<tr data-slide="{_e(f["slide_id"])}" data-stage="{_e(f["stage"])}"><td>{_e(f["stage"])}</td>'
        f"<td>{_e('(cohort)' if f['slide_id'] == '*' else f['slide_id'])}</td>"
        f"<td>{_e(f['error_type'])}</td><td>{_e(f['message'])}</td>"
        f'<td class="path">{_e(f.get("source_path") or "—")}</td><td>{_e(f.get("run_id") or "—")}</td></tr>'
        for f in inputs.failures
    )
    return (
        f'<section id="failures"><h2>Failures <span class="count">({len(inputs.failures)})</span></h2>'
        '<p class="note">Slides that failed a stage, with the reason; they are missing from the figures above.</p>'
        '<div class="scroll"><table class="grid" id="failure-table"><thead><tr><th>Stage</th><th>Slide</th>'
        "<th>Error</th><th>Message</th><th>File</th><th>Run</th></tr></thead>"
        f"<tbody>{body}</tbody></table></div></section>"
    )


def _definition_list(items: Mapping[str, Any]) -> str:
    rows = []
    for key, value in items.items():
        if value is None or value == "" or value == [] or value == {}:
            continue
        if isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value):
            shown = _e(", ".join(str(v) for v in value))
        elif isinstance(value, Mapping | list | tuple):
            dumped = json.dumps(value, indent=2, sort_keys=True, default=str)
            shown = (
                f"<details><summary>{len(value)} entries</summary><pre>{_e(dumped)}</pre></details>"
            )
        else:
            shown = _e(value)
        rows.append(f"<dt>{_e(key)}</dt><dd>{shown}</dd>")
    return f"<dl>{''.join(rows)}</dl>"


def _provenance_section(inputs: ReportInputs) -> str:
    parts = []
    for title, items in inputs.provenance.items():
        if isinstance(items, Mapping) and items:
            parts.append(f"<h3>{_e(title)}</h3>{_definition_list(items)}")
    return f'<section id="provenance"><h2>Run provenance</h2>{"".join(parts)}</section>'


# --------------------------------------------------------------------------------------------

CSS = """
:root { --ink:#1e1e1e; --muted:#666; --line:#ddd; --accent:#1f5fa8; --bad:#b3261e; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); margin: 0; background: #fafafa; }
header { background: #fff; border-bottom: 1px solid var(--line); padding: 16px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header .meta { color: var(--muted); }
nav { margin-top: 8px; } nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
main { padding: 8px 28px 40px; max-width: 1500px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 14px 18px;
          margin: 16px 0; }
h2 { font-size: 18px; margin: 0 0 10px; } h3 { font-size: 15px; margin: 16px 0 8px; }
.count { color: var(--muted); font-weight: normal; }
.note { color: var(--muted); margin: 4px 0 10px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; min-width: 130px; }
.card .value { font-size: 24px; font-weight: 600; } .card .label { font-weight: 600; }
.card .n { color: var(--muted); font-size: 12px; }
table.grid { border-collapse: collapse; font-variant-numeric: tabular-nums; }
table.grid th, table.grid td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left;
                               vertical-align: top; }
table.grid td.num { text-align: right; }
table.grid thead th { background: #f3f3f3; position: sticky; top: 0; }
table.sortable thead th[data-type] { cursor: pointer; user-select: none; white-space: nowrap; }
table.sortable thead th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable thead th[aria-sort="descending"]::after { content: " \\25BC"; }
table.sortable tbody tr:hover { background: #f5f9ff; }
td.nowrap, th.nowrap { white-space: nowrap; }
td.path { color: var(--muted); word-break: break-all; max-width: 360px; }
#failure-table td:nth-child(3) { color: var(--bad); font-weight: 600; }
.scroll { overflow-x: auto; }
.pair { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
img.figure { max-width: min(100%, 720px); height: auto; border: 1px solid var(--line); }
img.panel { max-width: 100%; height: auto; border: 1px solid var(--line); }
figure { margin: 10px 0 18px; } figcaption { color: var(--muted); }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }
dt { font-weight: 600; } dd { margin: 0; word-break: break-all; }
pre { margin: 0; font-size: 12px; white-space: pre-wrap; background: #f6f6f6; padding: 6px; }
"""

SORT_JS = """
(function () {
  function key(cell, type) {
    var raw = cell.getAttribute('data-value');
    if (raw === null) raw = cell.textContent;
    if (raw === '') return null;
    if (type === 'number') { var f = parseFloat(raw); return isNaN(f) ? null : f; }
    return raw.toLowerCase();
  }
  function sortTable(table, column, th) {
    var type = th.getAttribute('data-type');
    var ascending = th.getAttribute('aria-sort') !== 'ascending';
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows).map(function (row, index) {
      return { row: row, index: index, key: key(row.cells[column], type) };
    });
    rows.sort(function (a, b) {
      if (a.key === null || b.key === null) {
        if (a.key === b.key) return a.index - b.index;
        return a.key === null ? 1 : -1;               // undefined values stay last
      }
      var c = a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
      return (ascending ? c : -c) || a.index - b.index;
    });
    rows.forEach(function (r) { body.appendChild(r.row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.setAttribute('aria-sort', 'none'); });
    th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
      if (!th.hasAttribute('data-type')) return;
      th.tabIndex = 0;
      th.addEventListener('click', function () { sortTable(table, column, th); });
      th.addEventListener('keydown', function (e) {
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sortTable(table, column, th); }
      });
    });
  });
})();
"""


def build_report_html(inputs: ReportInputs) -> str:
    """The whole report page as one string (no external resource of any kind)."""
    cohort = _cohort_rows(inputs)
    sections = [
        _summary_section(inputs, cohort),
        _distribution_section(inputs),
        _threshold_section(inputs),
        _slides_section(inputs),
        _panels_section(inputs),
        *(html_ for _, _, html_ in inputs.extra_sections),
        _failures_section(inputs),
        _provenance_section(inputs),
    ]
    nav = "".join(
        f'<a href="#{anchor}">{label}</a>'
        for anchor, label in (
            ("summary", "Summary"),
            ("distribution", "IoU"),
            ("threshold", "Threshold"),
            ("slides", "Slides"),
            ("panels", "Best / worst"),
            *((anchor, label) for anchor, label, html_ in inputs.extra_sections if html_),
            ("failures", "Failures"),
            ("provenance", "Provenance"),
        )
    )
    n_slides = len(inputs.slides) or len(inputs.slide_files)
    title = f"SlideFleet report: {inputs.model_ref}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>{_e(title)}</h1><div class="meta">model_id <code>{_e(inputs.model_id)}</code> · '
        f"{n_slides} slides · {len(inputs.failures)} failures · generated {_e(inputs.generated_at)}</div>"
        f"<nav>{nav}</nav></header><main>{''.join(s for s in sections if s)}</main>"
        f"<script>{SORT_JS}</script></body></html>\n"
    )
