"""`medfound quickstart`: the README's main job, end to end on its synthetic demo and real data."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow_hub as hub

from medfound.cli.main import main
from medfound.formats.metadata import read_metadata


def test_quickstart_demo_chain(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--steps", "4", "--quiet"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "quickstart.json").read_text())
    assert "linear-probe test AUC" in printed and summary["module"] in printed
    assert 0.0 <= summary["auc_pretrained_module"] <= 1.0
    assert 0.0 <= summary["auc_random_init"] <= 1.0
    assert summary["train_images"] + summary["test_images"] == 400
    assert (out / "demo_data" / "README.txt").read_text().startswith("SYNTHETIC")
    meta = read_metadata(summary["module"])
    assert (meta.name, meta.steps, meta.init) == ("quickstart-cxr-tiny", 4, "random")
    features = hub.load(summary["module"])(np.full((2, 64, 64, 3), 0.5, np.float32))
    assert features.shape == (2, 2, 2, 1024)


@pytest.mark.slow
def test_quickstart_at_its_defaults_learns_on_the_demo(tmp_path):
    """What the README promises of the main job: the pretraining visibly learns (its loss leaves
    chance) and the pretrained module's probe clearly beats random initialisation."""
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "quickstart.json").read_text())
    first, last = summary["pretraining_loss_first_last"]
    assert last < first - 0.3, (first, last)
    assert summary["auc_pretrained_module"] > summary["auc_random_init"] + 0.15, summary
    assert summary["auc_pretrained_module"] > 0.85, summary


def test_quickstart_on_real_medmnist(shared_data, tmp_path):
    assert main(["quickstart", "--data", str(shared_data / "pneumoniamnist.npz"), "--out",
                 str(tmp_path / "qs"), "--steps", "2", "--image-size", "32", "--quiet"]) == 0
    summary = json.loads((tmp_path / "qs" / "quickstart.json").read_text())
    assert (summary["train_images"], summary["test_images"]) == (4708, 624)
    assert np.isfinite(summary["auc_pretrained_module"])
