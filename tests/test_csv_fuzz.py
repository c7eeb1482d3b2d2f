"""Property-based tests of the CSV loaders: CSVs of random cells either load with exactly the
labels a direct reading gives, or are refused with a DatasetFormatError that names the file.
Nothing else (IndexError, a NumPy error, a silently wrong label) may come out."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from medfound.data.labeled.base import DatasetFormatError
from medfound.data.labeled.chexpert import load_chexpert
from medfound.data.labeled.generic import load_csv

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
CLASSES = ("Atelectasis", "Edema")
# Cells a hospital export really holds; junk comes in as at most one corrupted cell per CSV, so
# that most examples are loadable and the loaded labels get checked.
VALID_LABELS = st.sampled_from(["1.0", "0.0", "-1.0", "", "1", "0", "-1", " 1.0 "])
JUNK = st.one_of(st.sampled_from(["2.0", "yes", "nan", "-1.5", "1e3"]), st.text(max_size=6))
VALID_PATHS = st.builds(
    lambda p, s, v: f"CheXpert-v1.0-small/train/patient{p:05d}/study{s}/view{v}_frontal.jpg",
    st.integers(0, 5), st.integers(1, 2), st.integers(1, 3))
BAD_PATHS = st.sampled_from(["../escape.jpg", "/abs/path.jpg",
                             "CheXpert-v1.0-small/train/nopatient/x.jpg"])


@st.composite
def corrupted(draw, rows_strategy, columns: int, cell_strategies: dict[int, st.SearchStrategy]):
    """Rows from ``rows_strategy``, then maybe one cell replaced by a draw of its junk strategy."""
    rows = [list(row) for row in draw(rows_strategy)]
    if rows and draw(st.booleans()):
        r = draw(st.integers(0, len(rows) - 1))
        c = draw(st.sampled_from(sorted(cell_strategies)))
        rows[r][c] = draw(cell_strategies[c])
    return rows


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *rows])
    path.write_text(buffer.getvalue())
    return path


def _direct(cell: str, policy: str) -> tuple[float, float] | None:
    """(label, mask) of one CheXpert cell read by hand; None for a value no policy accepts."""
    text = cell.strip()
    if text == "":
        return 0.0, 1.0
    try:
        value = float(text)
    except ValueError:
        return None
    if value == 1.0:
        return 1.0, 1.0
    if value == 0.0:
        return 0.0, 1.0
    if value == -1.0:
        return {"ones": (1.0, 1.0), "zeros": (0.0, 1.0), "ignore": (0.0, 0.0)}[policy]
    return None


def _refused_naming(error: BaseException, path: Path) -> None:
    assert isinstance(error, DatasetFormatError), repr(error)
    assert str(path) in str(error)


@FUZZ
@given(rows=corrupted(st.lists(st.tuples(VALID_PATHS, st.sampled_from(["Frontal", "Lateral"]),
                                         VALID_LABELS, VALID_LABELS), max_size=12,
                               unique_by=lambda row: row[0]),
                      4, {0: BAD_PATHS, 2: JUNK, 3: JUNK}),
       policy=st.sampled_from(["ones", "zeros", "ignore"]))
def test_chexpert_csv_of_random_cells(tmp_path_factory, rows, policy):
    path = _write(tmp_path_factory.mktemp("chexpert") / "train.csv",
                  ["Path", "Frontal/Lateral", *CLASSES],
                  rows)
    try:
        ds = load_chexpert(path, classes=CLASSES, uncertainty=policy)
    except DatasetFormatError as error:
        event("refused")
        _refused_naming(error, path)
        return
    except Exception as error:  # noqa: BLE001 - the property: nothing else may escape
        pytest.fail(f"{type(error).__name__} instead of a DatasetFormatError: {error}")
    event("loaded")
    expected = [[_direct(cell, policy) for cell in row[2:]] for row in rows]
    assert all(None not in cells for cells in expected), "an invalid cell was accepted"
    assert len({row[0] for row in rows}) == len(rows), "a duplicate path was accepted"
    assert not any(row[0].startswith(("/", "..")) for row in rows), "an escaping path was accepted"
    np.testing.assert_array_equal(ds.labels, [[c[0] for c in cells] for cells in expected])
    np.testing.assert_array_equal(ds.mask, [[c[1] for c in cells] for cells in expected])
    assert not any("/nopatient/" in row[0] for row in rows), "a path without a patient passed"
    assert ds.patient_ids.tolist() == [row[0].split("/")[2] for row in rows]


@FUZZ
@given(rows=corrupted(
    st.lists(st.tuples(st.builds(lambda i: f"img{i}.png", st.integers(0, 30)),
                       st.sampled_from(["benign", "malignant"]), st.sampled_from(["a", "b", "c"])),
             max_size=10, unique_by=lambda row: row[0]),
    3, {0: st.sampled_from(["../x.png", "/x.png", "sub/../../x.png"]),
        1: st.text(max_size=4), 2: st.just("")}))
def test_generic_csv_of_random_cells(tmp_path_factory, rows):
    path = _write(tmp_path_factory.mktemp("generic") / "labels.csv", ["path", "label", "patient"],
                  rows)
    classes = ("benign", "malignant")
    try:
        ds = load_csv(path, patient_column="patient", classes=classes, check_files=False)
    except DatasetFormatError as error:
        event("refused")
        _refused_naming(error, path)
        return
    except Exception as error:  # noqa: BLE001
        pytest.fail(f"{type(error).__name__} instead of a DatasetFormatError: {error}")
    event("loaded")
    assert all(row[1] in classes for row in rows), "an unknown label was accepted"
    assert all(row[2] for row in rows), "an empty patient id was accepted"
    assert not any(row[0].startswith(("/", "..")) for row in rows)
    assert len({row[0] for row in rows}) == len(rows)
    assert ds.labels.ravel().tolist() == [float(row[1] == "malignant") for row in rows]
    assert ds.patient_ids.tolist() == [row[2] for row in rows]
    assert math.isclose(float(ds.mask.sum()), len(rows))
