"""`medfound quickstart`: the README's main job, end to end on its synthetic demo and real data."""
from __future__ import annotations

import csv
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
    # The opacity is visible even to untrained features: after 4 steps both probes are above
    # chance on the 60 test patients (seed 0 measured 0.70 and 0.67; shuffled labels give ~0.5).
    assert summary["auc_pretrained_module"] > 0.6 and summary["auc_random_init"] > 0.6, summary
    assert summary["train_images"] + summary["test_images"] == 400
    assert (out / "demo_data_seed0" / "README.txt").read_text().startswith("SYNTHETIC")
    meta = read_metadata(summary["module"])
    assert (meta.name, meta.steps, meta.init) == ("quickstart-cxr-tiny", 4, "random")
    features = hub.load(summary["module"])(np.full((2, 64, 64, 3), 0.5, np.float32))
    assert features.shape == (2, 2, 2, 1024)
    # SimCLR saw the training patients only, never the test patients.
    pretrained_on = {row["patient"] for row in csv.DictReader(open(summary["pretraining_data"]))}
    labels = list(csv.DictReader(open(out / "demo_data_seed0" / "labels.csv")))
    assert len(pretrained_on) == summary["train_images"] // 2 and len(labels) == 400
    assert summary["pretraining_steps"] == 4

    # A second run on the same --out (finished run: nothing to train) and one with fewer
    # --steps both end cleanly, reusing the run and keeping its recorded losses.
    for steps in ("4", "2"):
        assert main(["quickstart", "--out", str(out), "--steps", steps, "--quiet"]) == 0
        captured = capsys.readouterr()
        assert "Traceback" not in captured.out + captured.err
        assert "already holds 4 pretraining steps" in captured.out
        again = json.loads((out / "quickstart.json").read_text())
        assert again["pretraining_loss_first_last"] == summary["pretraining_loss_first_last"]
        assert again["auc_pretrained_module"] == pytest.approx(summary["auc_pretrained_module"])


def test_quickstart_demo_set_follows_the_seed_and_refuses_pathology(tmp_path):
    from medfound.data.synthetic import make_demo_dataset
    from medfound.quickstart import QuickstartConfig, demo_folder

    images = []
    for seed in (0, 1):
        folder = demo_folder(QuickstartConfig(out_dir=str(tmp_path), seed=seed))
        csv_path = make_demo_dataset(folder, patients=2, seed=seed)
        images.append((csv_path.parent / "images" / "demo0000_0.png").read_bytes())
    assert images[0] != images[1]
    with pytest.raises(ValueError, match="demo set is chest-X-ray-like"):
        QuickstartConfig(out_dir=str(tmp_path / "p"), modality="path").validate()


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
