"""Stratified, grouped, seeded splits: the pure assignment and `slidefleet split` on real manifests."""

from __future__ import annotations

import csv
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cli import main
from engine.errors import ConfigError, ManifestError
from engine.manifest import read_manifest
from engine.operate.split import split_manifest
from engine.splits import SPLITS, SplitCandidate, SplitFractions, allocate, assign_splits


def test_allocate_largest_remainder_prefers_evaluation_splits() -> None:
    fractions = SplitFractions(0.6, 0.2, 0.2)
    assert allocate(10, fractions) == {"train": 6, "calibration": 2, "test": 2}
    assert allocate(2, fractions) == {"train": 1, "calibration": 0, "test": 1}
    assert allocate(3, fractions) == {"train": 2, "calibration": 0, "test": 1}
    assert allocate(4, fractions) == {"train": 2, "calibration": 1, "test": 1}
    assert allocate(0, fractions) == {"train": 0, "calibration": 0, "test": 0}
    with pytest.raises(ConfigError, match="add up to 1"):
        SplitFractions(0.5, 0.2, 0.2)


@st.composite
def cohorts(draw):
    n = draw(st.integers(1, 80))
    strata = draw(st.lists(st.sampled_from(["tumor", "normal", "itc"]), min_size=n, max_size=n))
    patients = draw(st.lists(st.integers(0, max(0, n // 2)), min_size=n, max_size=n))
    return [
        SplitCandidate(f"s{i:03d}", stratum, f"p{patient}")
        for i, (stratum, patient) in enumerate(zip(strata, patients, strict=True))
    ]


@settings(max_examples=120, deadline=None)
@given(cohorts(), st.integers(0, 5))
def test_groups_whole_strata_proportional_order_free(candidates, seed) -> None:
    fractions = SplitFractions(0.6, 0.2, 0.2)
    assignment = assign_splits(candidates, fractions, seed=seed)
    assert set(assignment) == {c.slide_id for c in candidates}
    by_group: dict[str, set[str]] = {}
    for c in candidates:
        by_group.setdefault(c.group, set()).add(assignment[c.slide_id])
    assert all(len(splits) == 1 for splits in by_group.values())  # no patient in two splits
    # Per stratum (of groups), each split holds its share within one group.
    group_stratum: dict[str, str] = {}
    for group in by_group:
        counts = Counter(c.stratum for c in candidates if c.group == group)
        top = max(counts.values())
        group_stratum[group] = min(s for s, n in counts.items() if n == top)
    for stratum in set(group_stratum.values()):
        groups = [g for g, s in group_stratum.items() if s == stratum]
        per_split = Counter(next(iter(by_group[g])) for g in groups)
        for split, fraction in zip(SPLITS, fractions.as_tuple(), strict=True):
            assert abs(per_split[split] - fraction * len(groups)) < 1 + 1e-9
    shuffled = list(candidates)
    random.Random(seed).shuffle(shuffled)
    assert assign_splits(shuffled, fractions, seed=seed) == assignment


def test_seed_changes_the_split() -> None:
    candidates = [SplitCandidate(f"s{i}", "all", f"slide:s{i}") for i in range(30)]
    splits = {
        tuple(sorted(assign_splits(candidates, SplitFractions(), seed=s).items())) for s in range(4)
    }
    assert len(splits) == 4


def _write_manifest(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rows = []
    for i in range(24):
        label = "tumor" if i % 3 == 0 else "normal"
        rows.append(
            {
                "slide_id": f"{i:04d}",  # numeric-looking IDs stay text
                "path": f"slides/{i:04d}.tif",
                "annotation": f"ann/{i:04d}.xml" if label == "tumor" else "",
                "label": label,
                "provider": "radboud" if i % 2 else "utrecht",
                "patient_id": f"P{i // 2}",  # two slides per patient
                "note": "keep; me",
            }
        )
    path = folder / "manifest.csv"
    with path.open("w", newline="", encoding="utf-8-sig") as handle:  # a BOM, as Excel writes
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_cli_split_writes_a_usable_manifest(tmp_path: Path, capsys) -> None:
    manifest = _write_manifest(tmp_path / "cohort")
    out = tmp_path / "elsewhere" / "split.csv"
    assert main(["split", str(manifest), "--out", str(out), "--seed", "7"]) == 0
    printed = capsys.readouterr().out
    assert "stratified by label × provider" in printed and "'patient_id'" in printed
    assert "normal / radboud" in printed

    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["slide_id"] for r in rows] == [f"{i:04d}" for i in range(24)]
    assert all(r["note"] == "keep; me" for r in rows)
    assert Counter(r["split"] for r in rows) == {"train": 14, "calibration": 4, "test": 6}
    for patient in {r["patient_id"] for r in rows}:
        assert len({r["split"] for r in rows if r["patient_id"] == patient}) == 1
    # Paths were rebased: the new manifest resolves to the same files as the old one.
    old = {e.slide_id: e for e in read_manifest(manifest).entries}
    new = read_manifest(out)
    assert not new.rejected and len(new.entries) == 24
    for entry in new.entries:
        assert entry.path.resolve() == old[entry.slide_id].path.resolve()
        assert entry.split in SPLITS
        if old[entry.slide_id].annotation:
            assert entry.annotation.resolve() == old[entry.slide_id].annotation.resolve()
    # Same seed, same file; another seed, another split.
    again = tmp_path / "elsewhere" / "again.csv"
    main(["split", str(manifest), "--out", str(again), "--seed", "7"])
    assert again.read_bytes() == out.read_bytes()


def test_cli_split_on_a_synthetic_cohort(tmp_path: Path, capsys) -> None:
    assert (
        main(
            [
                "synth",
                "--slides",
                "8",
                "--out",
                str(tmp_path / "c"),
                "--width-px",
                "2048",
                "--height-px",
                "2048",
            ]
        )
        == 0
    )
    out = tmp_path / "c" / "split.parquet"
    assert main(["split", str(tmp_path / "c" / "manifest.csv"), "--out", str(out)]) == 0
    assert "stratified by label" in capsys.readouterr().out
    manifest = read_manifest(out)
    assert len(manifest.entries) == 8 and all(e.path.exists() for e in manifest.entries)


def test_split_errors_name_the_problem(tmp_path: Path) -> None:
    manifest = _write_manifest(tmp_path / "cohort")
    with pytest.raises(ManifestError, match="'scanner' is not in the manifest"):
        split_manifest(manifest, tmp_path / "x.csv", site_column="scanner")
    duplicated = tmp_path / "dup.csv"
    duplicated.write_text("slide_id,path\na,a.tif\na,b.tif\n")
    assert main(["split", str(duplicated), "--out", str(tmp_path / "y.csv")]) == 2
    assert not (tmp_path / "y.csv").exists()
