"""Stratified, seeded train / calibration / test splits of a cohort (pure compute).

What a pathology group expects of a split:

- **Stratified**: every stratum (slide label or tumour-burden class, crossed with the provider or
  scanner when the manifest has one) is divided in the requested fractions, so calibration and test
  see the same mix as train.
- **Grouped**: all slides of one patient (or case) land in the same split; slides of a patient in
  train and test leak the patient's tissue into the evaluation. A group's stratum is the most
  common stratum among its slides.
- **Seeded and stable**: the same rows, fractions and seed give the same split, whatever the row
  order of the manifest.

Counts per stratum use the largest-remainder rule, so each split's share of a stratum is within
one group of the requested fraction; equal remainders go to test, then calibration, so small
strata reach the evaluation splits (a stratum of two groups at 0.6/0.2/0.2: one train, one test).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engine.errors import ConfigError, ManifestError

SPLITS: tuple[str, ...] = ("train", "calibration", "test")


@dataclass(frozen=True)
class SplitCandidate:
    """One slide to assign: its ID, its stratum key and its group (patient / case) key."""

    slide_id: str
    stratum: str
    group: str


@dataclass(frozen=True)
class SplitFractions:
    train: float = 0.6
    calibration: float = 0.2
    test: float = 0.2

    def __post_init__(self) -> None:
        values = (self.train, self.calibration, self.test)
        if any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
            raise ConfigError(
                f"split fractions must be non-negative and add up to 1, got "
                f"train={self.train}, calibration={self.calibration}, test={self.test}"
            )

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.train, self.calibration, self.test)


def allocate(count: int, fractions: SplitFractions) -> dict[str, int]:
    """Split ``count`` units in the fractions by the largest-remainder rule (ties: test first)."""
    shares = [count * f for f in fractions.as_tuple()]
    base = [int(s) for s in shares]
    left = count - sum(base)
    # Larger remainder first; on ties prefer test, then calibration (evaluation sets stay non-empty).
    order = sorted(range(3), key=lambda i: (-(shares[i] - base[i]), -i))
    for i in order[:left]:
        base[i] += 1
    return dict(zip(SPLITS, base, strict=True))


def _shuffle_key(seed: int, stratum: str, group: str) -> str:
    return hashlib.sha256(f"{seed}\x00{stratum}\x00{group}".encode()).hexdigest()


def assign_splits(
    candidates: Sequence[SplitCandidate], fractions: SplitFractions, *, seed: int = 0
) -> dict[str, str]:
    """``slide_id → split``. Groups are kept whole; each stratum's groups are split by count.

    The order within a stratum is a seeded hash of the group key, so the result does not depend on
    the order of the rows.
    """
    ids = [c.slide_id for c in candidates]
    if len(set(ids)) != len(ids):
        duplicated = sorted(i for i, n in Counter(ids).items() if n > 1)
        raise ManifestError(
            f"slide IDs must be unique to split a cohort; repeated: {duplicated[:5]}"
        )
    members: dict[str, list[SplitCandidate]] = defaultdict(list)
    for candidate in candidates:
        members[candidate.group].append(candidate)
    groups_by_stratum: dict[str, list[str]] = defaultdict(list)
    for group, slides in members.items():
        strata = Counter(s.stratum for s in slides)
        top = max(strata.values())
        stratum = min(s for s, n in strata.items() if n == top)  # deterministic on ties
        groups_by_stratum[stratum].append(group)
    assignment: dict[str, str] = {}
    for stratum in sorted(groups_by_stratum):
        groups = sorted(groups_by_stratum[stratum], key=lambda g: _shuffle_key(seed, stratum, g))
        counts = allocate(len(groups), fractions)
        start = 0
        for split in SPLITS:
            for group in groups[start : start + counts[split]]:
                for slide in members[group]:
                    assignment[slide.slide_id] = split
            start += counts[split]
    return assignment


def strata_table(
    candidates: Sequence[SplitCandidate], assignment: Mapping[str, str]
) -> dict[str, dict[str, int]]:
    """``stratum → {split: slides}`` for a summary (every split present, zeros included)."""
    table: dict[str, dict[str, int]] = {}
    for candidate in candidates:
        row = table.setdefault(candidate.stratum, dict.fromkeys(SPLITS, 0))
        row[assignment[candidate.slide_id]] += 1
    return dict(sorted(table.items()))
