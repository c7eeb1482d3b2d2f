"""Patient-level splits, the leakage check and label-fraction subsets."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medfound.data.labeled.base import LabeledDataset
from medfound.data.labeled.splits import (LABEL_FRACTIONS, PatientLeakageError, check_no_leakage,
                                          label_fraction_indices, label_fraction_subset, parse_fraction, parse_fractions,
                                          patient_split, split_dataset)


def _dataset(n_patients=200, seed=0):
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 6, n_patients)
    patients = np.repeat([f"p{i:04d}" for i in range(n_patients)], per)
    rng.shuffle(patients)
    labels = rng.integers(0, 2, (patients.size, 2)).astype(np.float32)
    return LabeledDataset(labels=labels, mask=np.ones_like(labels), patient_ids=patients, class_names=("a", "b"),
                          task="multilabel", paths=[f"/x/{i}.png" for i in range(patients.size)])


def test_patient_split_is_disjoint_complete_and_seeded():
    ds = _dataset()
    parts = patient_split(ds.patient_ids, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=5)
    all_rows = np.sort(np.concatenate(list(parts.values())))
    np.testing.assert_array_equal(all_rows, np.arange(len(ds)))
    sets = {k: set(ds.patient_ids[v]) for k, v in parts.items()}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    assert [len(sets[k]) for k in ("train", "val", "test")] == [140, 20, 40]
    again = patient_split(ds.patient_ids, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=5)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    other = patient_split(ds.patient_ids, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=6)
    assert not np.array_equal(parts["test"], other["test"])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=3, max_size=200), st.integers(0, 10_000))
def test_split_never_leaks(ids, seed):
    patients = np.array([f"p{i}" for i in ids])
    if np.unique(patients).size < 3:
        return
    parts = patient_split(patients, seed=seed)
    check_no_leakage({k: patients[v] for k, v in parts.items()})
    assert all(v.size > 0 for v in parts.values())
    assert sum(v.size for v in parts.values()) == patients.size


def test_leakage_is_refused_naming_the_patients():
    ds = _dataset()
    parts = split_dataset(ds, seed=1)
    leaked = parts["test"].patient_ids[0]
    bad_train = ds.subset(np.r_[np.flatnonzero(np.isin(ds.patient_ids, parts["train"].patient_ids)),
                                np.flatnonzero(ds.patient_ids == leaked)])
    with pytest.raises(PatientLeakageError, match=f"'train' and 'test': {leaked}"):
        check_no_leakage({"train": bad_train, "val": parts["val"], "test": parts["test"]})


def test_label_fractions_are_patient_level_nested_and_deterministic():
    ds = _dataset(n_patients=500)
    previous = None
    for f in LABEL_FRACTIONS:
        idx = label_fraction_indices(ds.patient_ids, f, seed=3)
        chosen = set(ds.patient_ids[idx])
        # whole patients: every row of a chosen patient is in the subset
        assert np.isin(ds.patient_ids, list(chosen)).sum() == idx.size
        assert f * len(ds) <= idx.size < f * len(ds) + 6  # at most one patient (<= 5 rows) over
        if previous is not None:
            assert previous <= set(idx.tolist())
        previous = set(idx.tolist())
        np.testing.assert_array_equal(idx, label_fraction_indices(ds.patient_ids, f, seed=3))
    assert len(label_fraction_subset(ds, 1.0)) == len(ds)
    a, b = label_fraction_indices(ds.patient_ids, 0.1, 1), label_fraction_indices(ds.patient_ids, 0.1, 2)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("text, value", [("5%", 0.05), ("0.25", 0.25), (1, 1.0), ("1", 1.0), ("100%", 1.0)])
def test_parse_fraction(text, value):
    assert parse_fraction(text) == pytest.approx(value)


@pytest.mark.parametrize("bad", ["0", "-5%", "abc", "150%", "5", 10])
def test_parse_fraction_refuses(bad):
    with pytest.raises(ValueError, match="label fraction"):
        parse_fraction(bad)


def test_a_bare_number_above_one_is_refused_with_the_spelling_to_use(capsys):
    """'1' is all the labels everywhere (--label-fraction and --fractions alike); '5' is not
    guessed to be 5 %: the error says to write 0.05."""
    from medfound.cli.main import main

    with pytest.raises(ValueError, match=r"label fraction '5' is above 1: .* write 0.05 \(or 5%\)"):
        parse_fraction("5")
    assert parse_fractions("0.01,5%,1") == pytest.approx([0.01, 0.05, 1.0])
    assert main(["label-efficiency", "--modules", "random:tiny", "--fractions", "1,5",
                 "--data", "x.npz", "--task", "medmnist", "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert "--fractions: label fraction '5' is above 1" in err and "0.05" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
