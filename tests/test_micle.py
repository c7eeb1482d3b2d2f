"""MICLe positive pairs on the real NIH sample: same patient, different files when possible."""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medfound.data.images import read_image
from medfound.data.micle import micle_pairs, patient_groups
from medfound.data.tfrecords import write_tfrecords
from medfound.data.unlabeled import open_unlabeled


def nih_patient(path: bytes) -> str:
    """Patient id read from the NIH file name itself, independent of the metadata CSV."""
    return str(int(Path(path.decode()).name.split("_")[0]))


@pytest.fixture(scope="module")
def nih(shared_data):
    return open_unlabeled(shared_data / "nih-cxr14-sample")


@pytest.fixture(scope="module")
def images_per_patient(nih):
    return Counter(nih_patient(p.encode()) for p in nih.paths)


def test_every_micle_pair_is_one_patient_and_two_files(nih, images_per_patient):
    assert sum(1 for n in images_per_patient.values() if n > 1) == 136
    partners = defaultdict(set)
    draws = 0
    for pair in micle_pairs(nih, seed=7, repeat=True).take(1500):
        a, b = pair["path_a"].numpy(), pair["path_b"].numpy()
        patient = nih_patient(a)
        assert nih_patient(b) == patient == pair["patient"].numpy().decode()
        if images_per_patient[patient] > 1:
            assert a != b
            partners[a].add(b)
        else:
            assert a == b
            np.testing.assert_array_equal(pair["image_a"].numpy(), pair["image_b"].numpy())
        assert pair["image_a"].shape == (64, 64, 3) and pair["image_b"].shape == (64, 64, 3)
        draws += 1
    assert draws == 1500
    # Partners are drawn over the whole patient: a 2-image patient's anchor always gets the
    # other image; the most imaged patient's partners cover several of its files.
    top_patient, top_count = images_per_patient.most_common(1)[0]
    top_partners = set().union(*(v for k, v in partners.items() if nih_patient(k) == top_patient))
    assert len(top_partners) > min(5, top_count - 1)


def test_pair_images_are_the_named_files(nih):
    for pair in micle_pairs(nih, seed=1).take(5):
        np.testing.assert_array_equal(pair["image_a"].numpy(),
                                      read_image(pair["path_a"].numpy().decode()))
        np.testing.assert_array_equal(pair["image_b"].numpy(),
                                      read_image(pair["path_b"].numpy().decode()))


def test_probability_and_switch(nih, images_per_patient):
    multi = different = 0
    for pair in micle_pairs(nih, probability=0.5, seed=3).take(600):
        a, b = pair["path_a"].numpy(), pair["path_b"].numpy()
        if images_per_patient[nih_patient(a)] > 1:
            multi += 1
            different += a != b
    assert multi > 300
    assert 0.38 < different / multi < 0.62  # binomial(>=300, 0.5): far outside 5 sigma otherwise
    for micle, p in ((False, 1.0), (True, 0.0)):
        for pair in micle_pairs(nih, micle=micle, probability=p, seed=3).take(100):
            assert pair["path_a"].numpy() == pair["path_b"].numpy()


def test_pairs_are_reproducible_with_a_seed(nih):
    def draw(seed):
        return [(e["path_a"].numpy(), e["path_b"].numpy())
                for e in micle_pairs(nih, seed=seed).take(20)]
    first = draw(5)
    assert first == draw(5) and first != draw(6)


def test_sources_without_files_give_same_image_pairs_or_refuse_micle(shared_data, tmp_path):
    npz = open_unlabeled(shared_data / "pneumoniamnist.npz", split="test")
    for pair in micle_pairs(npz).take(5):
        assert pair["path_a"].numpy() == pair["path_b"].numpy()
    nih_dir = shared_data / "nih-cxr14-sample"
    names = sorted(p.name for p in (nih_dir / "images").glob("*.png"))[:6]
    (tmp_path / "list.csv").write_text(
        "file,patient\n" + "".join(f"images/{n},{nih_patient(n.encode())}\n" for n in names))
    with_patients = open_unlabeled(tmp_path / "list.csv", root=nih_dir)
    assert with_patients.has_patients
    write_tfrecords(with_patients, tmp_path / "tfr", num_shards=1)
    records = open_unlabeled(tmp_path / "tfr")
    assert records.has_patients
    with pytest.raises(ValueError, match="need a folder or CSV source"):
        micle_pairs(records)
    for pair in micle_pairs(records, micle=False).take(3):
        assert pair["path_a"].numpy() == pair["path_b"].numpy()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["", "a", "b", "c", "d"]), min_size=1, max_size=30))
def test_patient_groups_partition_images_by_patient(patients):
    members, start, size, position = patient_groups(patients)
    assert sorted(members.tolist()) == list(range(len(patients)))
    for i, patient in enumerate(patients):
        group = members[start[i]:start[i] + size[i]].tolist()
        assert members[start[i] + position[i]] == i
        if patient:
            assert group == [j for j, p in enumerate(patients) if p == patient]
        else:
            assert group == [i]


@pytest.mark.parametrize("micle", [False, True])
def test_every_element_of_an_epoch_is_readable_without_patient_groups(shared_data, micle):
    """Regression: the partner lookup was read out of bounds for the last one-image group."""
    source = open_unlabeled(shared_data / "breakhis")
    pairs = list(micle_pairs(source, micle=micle, seed=3, shuffle=True))
    assert len(pairs) == len(source.paths) == 12
    for pair in pairs:
        if not source.has_patients:
            assert pair["path_a"].numpy() == pair["path_b"].numpy()
        assert pair["image_a"].shape[-1] == 3
