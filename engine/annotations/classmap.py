"""Class maps: which source classes (names or mask values) become which output label.

A class map is the one place that says what counts as ground truth. Parsers report the class
names a file uses (ASAP ``PartOfGroup``, QuPath classification, NCRF ``positive``/``negative``)
and label-mask images report integer values; the map turns them into output labels:

* an integer ``1..255``: draw the shape with that label (higher label wins where shapes overlap);
* ``0``: a known class that is background (not drawn, no warning);
* ``"hole"``: an exclusion, cut back to background after all labels are drawn.

Names not in the map fall back to ``default``; when that is ``None`` they are ignored with an
:class:`~engine.annotations.shapes.AnnotationWarning`, so a QuPath export full of "Cell" objects
never becomes tumour unless asked. Names match case-insensitively.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.errors import ConfigError

HOLE: Final = "hole"
"""Target meaning "exclusion": pixels are set back to background after every label is drawn."""

UNCLASSIFIED: Final = "unclassified"
"""Class name parsers give to shapes without a class (ASAP group "None", QuPath no classification)."""

Label = Annotated[int, Field(ge=0, le=255)]
Target = Label | Literal["hole"]


def _fold(name: str) -> str:
    return name.strip().casefold()


class ClassMap(BaseModel):
    """Source class names and mask values mapped to output labels (``0`` = background)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Short name of the map, recorded with the rasterised labels.")
    classes: dict[str, Target] = Field(
        default_factory=dict,
        description="Source class name (case-insensitive) -> label 0..255 or 'hole'.",
    )
    values: dict[int, Target] = Field(
        default_factory=dict,
        description="Label-mask integer value -> label 0..255 or 'hole'.",
    )
    default: Target | None = Field(
        default=None,
        description="Target for names / non-zero values not listed; null ignores them with a warning.",
    )
    label_names: dict[int, str] = Field(
        default_factory=dict, description="Output label -> human-readable name, e.g. {1: 'tumour'}."
    )

    @field_validator("classes")
    @classmethod
    def _fold_names(cls, classes: dict[str, Target]) -> dict[str, Target]:
        folded: dict[str, Target] = {}
        for key, target in classes.items():
            fkey = _fold(key)
            if fkey in folded and folded[fkey] != target:
                raise ValueError(f"class {key!r} is listed twice (names are case-insensitive)")
            folded[fkey] = target
        return folded

    def target_for_names(self, candidates: Iterable[str]) -> Target | None:
        """Target of the first candidate name the map lists, else ``default``.

        Parsers give candidates from most to least specific (``"Tumor: Positive"``, ``"Tumor"``;
        an ASAP group then its parent groups).
        """
        for name in candidates:
            target = self.classes.get(_fold(name))
            if target is not None:
                return target
        return self.default

    def target_for_value(self, value: int) -> Target | None:
        """Target of a label-mask value; unlisted ``0`` is background, others fall to ``default``."""
        if value in self.values:
            return self.values[value]
        if value == 0:
            return 0
        return self.default

    @classmethod
    def from_gtcodes_csv(
        cls,
        path: Path,
        *,
        merge: Mapping[str, Target] | None = None,
        name: str | None = None,
    ) -> ClassMap:
        """Build a map from a HistomicsTK ``GTcodes`` CSV (columns ``group``, ``GT_code``, ``is_roi``).

        Parameters
        ----------
        path
            The CSV file.
        merge
            ``group -> target`` for a merged map (e.g. ``{"mostly_tumor": 1}``); groups of the
            CSV not listed become background. Without it each group keeps its ``GT_code``.
        name
            Name of the map; defaults to ``gtcodes:<file stem>``.

        ROI groups (``is_roi == 1``) are background; a group named ``exclude`` is a hole unless
        ``merge`` says otherwise.
        """
        try:
            with Path(path).open(newline="", encoding="utf-8-sig") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise ConfigError(f"cannot read GT codes CSV {path}: {exc}") from exc
        if not rows or not {"group", "GT_code"} <= set(rows[0]):
            raise ConfigError(f"GT codes CSV {path} needs the columns 'group' and 'GT_code'")
        merge_folded = {_fold(k): v for k, v in (merge or {}).items()}
        classes: dict[str, Target] = {}
        values: dict[int, Target] = {}
        label_names: dict[int, str] = {}
        for row in rows:
            group = (row["group"] or "").strip()
            try:
                code = int(row["GT_code"])
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    f"GT codes CSV {path}: GT_code of {group!r} is not an integer"
                ) from exc
            is_roi = (row.get("is_roi") or "0").strip() == "1"
            target: Target
            if merge is not None:
                target = merge_folded.get(_fold(group), 0)
            elif is_roi:
                target = 0
            elif _fold(group) == "exclude":
                target = HOLE
            else:
                target = code
            if isinstance(target, int) and target > 255:
                raise ConfigError(f"GT codes CSV {path}: label {target} of {group!r} exceeds 255")
            classes[group] = target
            values[code] = target
            if isinstance(target, int) and target > 0:
                prior = label_names.get(target)
                label_names[target] = group if prior is None else f"{prior}+{group}"
        unknown = set(merge_folded) - {_fold(g) for g in classes}
        if unknown:
            raise ConfigError(f"merge names groups not in {path}: {sorted(unknown)}")
        return cls(
            name=name or f"gtcodes:{Path(path).stem}",
            classes=classes,
            values=values,
            label_names=label_names,
        )


CLASS_MAP_PRESETS: Final[Mapping[str, ClassMap]] = {
    m.name: m
    for m in (
        ClassMap(
            name="camelyon16",
            # ASAP groups of CAMELYON16 (_0, _1, Tumor = tumour; _2 = exclusion) and the NCRF
            # JSON lists (positive / negative).
            classes={"Tumor": 1, "_0": 1, "_1": 1, "_2": HOLE, "positive": 1, "negative": HOLE},
            values={0: 0, 1: 1, 255: 1},
            label_names={1: "tumour"},
        ),
        ClassMap(
            name="binary_any",
            # Every area shape and every non-zero mask value is foreground; NCRF "negative"
            # lists are exclusions by the format's definition.
            classes={"negative": HOLE},
            default=1,
            label_names={1: "annotated"},
        ),
        ClassMap(
            name="panda_radboud",
            # 0 background, 1 stroma, 2 benign epithelium, 3/4/5 Gleason 3/4/5.
            values={0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1},
            label_names={1: "tumour"},
        ),
        ClassMap(
            name="panda_karolinska",
            # 0 background, 1 benign tissue, 2 cancer.
            values={0: 0, 1: 0, 2: 1},
            label_names={1: "tumour"},
        ),
    )
}


def class_map_preset(name: str) -> ClassMap:
    """The preset class map called ``name`` (see :data:`CLASS_MAP_PRESETS`)."""
    try:
        return CLASS_MAP_PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown class map preset {name!r}; choose one of {sorted(CLASS_MAP_PRESETS)} "
            "or build one from a GT codes CSV"
        ) from None
