"""Patient-level splits, the leakage check, and patient-level label-fraction subsets.

Every split here assigns whole patients, never single images, so that no patient's images are on
both sides of a train/test boundary; ``check_no_leakage`` refuses any split that breaks this.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from medfound.data.labeled.base import LabeledDataset

DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}
LABEL_FRACTIONS: tuple[float, ...] = (0.01, 0.05, 0.10, 0.25, 0.50, 1.0)


class PatientLeakageError(ValueError):
    """Patients appear in more than one split; the message names the splits and the patients."""


def _patient_ids(part: LabeledDataset | Sequence[str] | np.ndarray) -> np.ndarray:
    return part.patient_ids if isinstance(part, LabeledDataset) else np.asarray(part).astype(str)


def check_no_leakage(splits: Mapping[str, LabeledDataset | Sequence[str] | np.ndarray],
                     show: int = 10) -> None:
    """Raises PatientLeakageError if any patient id occurs in two splits (datasets or id lists)."""
    names = list(splits)
    patients = {name: np.unique(_patient_ids(splits[name])) for name in names}
    problems = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = np.intersect1d(patients[a], patients[b])
            if shared.size:
                listed = ", ".join(shared[:show].tolist())
                more = f" and {shared.size - show} more" if shared.size > show else ""
                problems.append(f"{shared.size} patient(s) in both '{a}' and '{b}': {listed}{more}")
    if problems:
        raise PatientLeakageError("patient leakage between splits: " + "; ".join(problems))


def _normalise(fractions: Mapping[str, float]) -> dict[str, float]:
    if not fractions:
        raise ValueError("give at least one split fraction")
    for name, f in fractions.items():
        if not (np.isfinite(f) and f >= 0):
            raise ValueError(f"split fraction for {name!r} must be >= 0, got {f}")
    total = float(sum(fractions.values()))
    if total <= 0:
        raise ValueError(f"split fractions sum to {total}; at least one must be positive")
    return {name: float(f) / total for name, f in fractions.items()}


def patient_split(patient_ids: Sequence[str] | np.ndarray, fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Row indices per split, assigning whole patients in the given proportions (of patients).

    Patients are shuffled with ``seed`` and cut by largest-remainder rounding; every split with a
    positive fraction gets at least one patient when there are enough. Deterministic for a seed.
    """
    ids = np.asarray(patient_ids).astype(str)
    fr = _normalise(fractions)
    uniq, inverse = np.unique(ids, return_inverse=True)
    n = uniq.size
    positive = [name for name, f in fr.items() if f > 0]
    if n < len(positive):
        raise ValueError(f"{n} patient(s) cannot fill {len(positive)} non-empty splits {positive}")
    raw = np.array([fr[name] * n for name in fr])
    counts = np.floor(raw).astype(int)
    for j in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[j] += 1
    names = list(fr)
    for j, name in enumerate(names):  # no positive split left without a patient
        if fr[name] > 0 and counts[j] == 0:
            donor = int(np.argmax(counts))
            counts[donor] -= 1
            counts[j] += 1
    order = np.random.default_rng(seed).permutation(n)
    assignment = np.empty(n, dtype=np.int64)
    start = 0
    for j, c in enumerate(counts):
        assignment[order[start:start + c]] = j
        start += c
    row_split = assignment[inverse.reshape(-1)]
    out = {name: np.flatnonzero(row_split == j) for j, name in enumerate(names)}
    check_no_leakage({name: ids[idx] for name, idx in out.items()})
    return out


def split_dataset(ds: LabeledDataset, fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
                  seed: int = 0) -> dict[str, LabeledDataset]:
    """The dataset cut into patient-disjoint parts (default train/val/test 80/10/10 of patients)."""
    parts = patient_split(ds.patient_ids, fractions, seed)
    return {name: ds.subset(idx, name=f"{ds.name}:{name}" if ds.name else name) for name, idx in parts.items()}


def checked_splits(splits: Mapping[str, LabeledDataset]) -> dict[str, LabeledDataset]:
    """Returns the splits unchanged after refusing any patient leakage between them."""
    check_no_leakage(splits)
    return dict(splits)


def parse_fraction(value: float | str) -> float:
    """A label fraction in (0, 1] from 0.05, '0.05' or '5%'; '1' is all the labels.

    A bare number above 1 ('5') is refused rather than guessed to be a percentage, so that '1'
    means one thing everywhere (100 %, not 1 %).
    """
    text = str(value).strip()
    try:
        f = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"label fraction {value!r} is not a number or a percentage") from None
    if f > 1.0 and not text.endswith("%"):
        raise ValueError(f"label fraction {value!r} is above 1: fractions are in (0, 1], so "
                         f"write {f / 100:g} (or {text}%) for {text} %")
    if not 0.0 < f <= 1.0:
        raise ValueError(f"label fraction {value!r} must be in (0, 1] (or 0-100%)")
    return f


def parse_fractions(text: str) -> list[float]:
    """Comma-separated label fractions ('0.01,0.1,1' or '1%,10%,100%'), each as parse_fraction."""
    return [parse_fraction(part) for part in str(text).split(",") if part.strip()]


def label_fraction_indices(patient_ids: Sequence[str] | np.ndarray, fraction: float | str,
                           seed: int = 0) -> np.ndarray:
    """Sorted row indices of a patient-level subset holding about ``fraction`` of the rows.

    Patients are shuffled with ``seed`` and taken in that order until the fraction of rows is
    reached (at least one patient), so subsets are deterministic and nested: the 5 % subset of a
    seed contains its 1 % subset.
    """
    f = parse_fraction(fraction)
    ids = np.asarray(patient_ids).astype(str)
    if ids.size == 0:
        raise ValueError("cannot take a label fraction of an empty dataset")
    uniq, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(uniq.size)
    cum = np.cumsum(counts[order])
    take = int(np.searchsorted(cum, f * ids.size - 1e-9) + 1)
    chosen = np.zeros(uniq.size, dtype=bool)
    chosen[order[:max(1, min(take, uniq.size))]] = True
    return np.flatnonzero(chosen[inverse.reshape(-1)])


def label_fraction_subset(ds: LabeledDataset, fraction: float | str, seed: int = 0) -> LabeledDataset:
    """The patient-level ``fraction`` subset of a (training) dataset; see label_fraction_indices."""
    f = parse_fraction(fraction)
    if f >= 1.0:
        return ds
    idx = label_fraction_indices(ds.patient_ids, f, seed)
    return ds.subset(idx, name=f"{ds.name}@{f:g}" if ds.name else None)


def split_by_keys(keys: Sequence[str] | np.ndarray, lists: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
    """Row indices per named list of keys (for example NIH's official image lists); unknown keys go nowhere."""
    keys = np.asarray(keys).astype(str)
    return {name: np.flatnonzero(np.isin(keys, np.asarray(list(members)).astype(str)))
            for name, members in lists.items()}
