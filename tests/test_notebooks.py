"""The notebooks run top to bottom on the real sample data (a failing cell fails the test)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.auc_reference import auc_from_predictions

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.slow
@pytest.mark.parametrize("name, expected", [
    ("finetune_chexpert.ipynb", "finetune_chexpert"),
    ("finetune_camelyon.ipynb", "finetune_camelyon"),
])
def test_notebook_executes(name, expected, shared_data, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="the notebooks extra is not installed")
    nbclient = pytest.importorskip("nbclient", reason="the notebooks extra is not installed")
    monkeypatch.setenv("MEDFOUND_TEST_DATA", str(shared_data))
    monkeypatch.setenv("MEDFOUND_NOTEBOOK_OUT", str(tmp_path))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert any("parameters" in c.metadata.get("tags", []) for c in notebook.cells)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    out = tmp_path / expected
    metrics = json.loads((out / "metrics.json").read_text())
    assert "test" in metrics and (out / "training_curves.png").is_file()
    images = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # sample images and training curves were drawn
    if name == "finetune_camelyon.ipynb":  # the whole-slide section ran on the generated slides
        slides = json.loads((out / "slide_classifier" / "metrics.json").read_text())
        assert set(slides["models"]) == {"mean", "attention"} and slides["splits"]["test"] >= 4
        predictions = out / "slide_classifier" / "predictions.csv"
        for kind, m in slides["models"].items():  # recomputed from the saved test scores
            assert m["auc"] == pytest.approx(auc_from_predictions(predictions, kind))
            assert m["auc_ci95"][0] <= m["auc"] <= m["auc_ci95"][1]
        assert len(list((out / "slide_features").glob("*.h5"))) == 16
        assert len(images) >= 6  # + thumbnail and tissue mask, two heatmaps
        if (shared_data / "wsi" / "CMU-1-Small-Region.svs").is_file():  # the real-slide cell
            text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                           for o in c.get("outputs", []))
            found = re.search(r"CMU-1-Small-Region\.svs \| levels .* tiles: \{0\.5: (\d+), "
                              r"1\.0: (\d+)\}", text)
            assert found, "the real slide cell printed nothing"
            at_half, at_one = map(int, found.groups())
            assert at_one > 0 and 3.0 <= at_half / at_one <= 4.5  # 4x the area per tile at 1.0
