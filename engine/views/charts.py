"""Report figures drawn with matplotlib's object API (no pyplot state), returned as PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from engine.metrics.cohort import BURDEN_LABELS, BURDEN_STRATA

STRATUM_COLOURS = {
    "high": "#1f77b4",
    "low": "#ff7f0e",
    "very_low": "#2ca02c",
    "none": "#7f7f7f",
}
OBJECTIVE_COLOURS = {"iou": "#1f77b4", "f1": "#ff7f0e", "youden": "#2ca02c"}


def _figure(width_in: float = 6.4, height_in: float = 3.0) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=110, layout="constrained")


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def iou_distribution(values_by_stratum: Mapping[str, Sequence[float]]) -> bytes:
    """Histogram of per-slide IoU (0..1, bins of 0.05), stacked by burden stratum, median marked."""
    figure = _figure()
    ax = figure.add_subplot()
    bins = np.linspace(0.0, 1.0, 21)
    strata: list[str] = [s for s in BURDEN_STRATA if values_by_stratum.get(s)]
    strata += [s for s in values_by_stratum if s not in strata and values_by_stratum[s]]
    data = [np.asarray(values_by_stratum[s], dtype=float) for s in strata]
    if data:
        ax.hist(
            data,
            bins=bins,
            stacked=True,
            label=[
                f"{s}: {BURDEN_LABELS.get(s, s)} (n={len(d)})"
                for s, d in zip(strata, data, strict=True)
            ],
            color=[STRATUM_COLOURS.get(s, "#9467bd") for s in strata],
            edgecolor="white",
        )
        every = np.concatenate(data)
        median = float(np.median(every))
        ax.axvline(median, color="black", linestyle="--", linewidth=1)
        ax.annotate(
            f"median {median:.3f}",
            (median, 1),
            xycoords=("data", "axes fraction"),
            xytext=(4, -12),
            textcoords="offset points",
            fontsize=8,
        )
        ax.legend(fontsize=8, title="burden", title_fontsize=8, loc="upper left")
    else:
        ax.text(
            0.5,
            0.5,
            "no slide with a defined IoU",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.set_xlim(0, 1)
    ax.set_xlabel("IoU per slide")
    ax.set_ylabel("slides")
    ax.yaxis.get_major_locator().set_params(integer=True)
    return _png(figure)


def threshold_sweep(
    rows: Sequence[Mapping[str, Any]],
    chosen: float | None,
    objective: str | None,
    score_kind: str | None,
) -> bytes:
    """Pooled IoU, F1 and Youden's J against the threshold, with the chosen threshold marked."""
    figure = _figure()
    ax = figure.add_subplot()
    thresholds = np.array([r["threshold"] for r in rows], dtype=float)
    for name in ("iou", "f1", "youden"):
        values = np.array([np.nan if r.get(name) is None else r[name] for r in rows], dtype=float)
        if np.isfinite(values).any():
            ax.plot(
                thresholds,
                values,
                label=name,
                color=OBJECTIVE_COLOURS[name],
                linewidth=2.2 if name == objective else 1.2,
            )
    if chosen is not None:
        ax.axvline(chosen, color="crimson", linestyle="--", linewidth=1.2)
        ax.annotate(
            f"chosen {chosen:.3g}" + (f" ({objective})" if objective else ""),
            (chosen, 1),
            xycoords=("data", "axes fraction"),
            xytext=(4, -12),
            textcoords="offset points",
            fontsize=8,
            color="crimson",
        )
    ax.set_xlabel(f"threshold ({score_kind or 'score'})")
    ax.set_ylabel("pooled value on the fitting split")
    ax.set_ylim(-0.02, 1.02)
    if rows:
        ax.legend(fontsize=8, loc="upper right")
    else:
        ax.text(0.5, 0.5, "no threshold sweep", ha="center", va="center", transform=ax.transAxes)
    return _png(figure)


def strata_bars(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """Micro and macro IoU and macro Dice per burden stratum (rows: stratum, n, and the figures)."""
    figure = _figure(6.4, 3.0)
    ax = figure.add_subplot()
    names = ["micro_iou", "macro_iou", "macro_dice"]
    x = np.arange(len(rows))
    width = 0.26
    for offset, name in enumerate(names):
        values = [np.nan if r.get(name) is None else r[name] for r in rows]
        ax.bar(x + (offset - 1) * width, values, width, label=name.replace("_", " "))
    ax.set_xticks(x, [f"{r['burden']}\n(n={r['n_slides']})" for r in rows], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("value")
    ax.legend(fontsize=8, ncols=3, loc="upper right")
    return _png(figure)
