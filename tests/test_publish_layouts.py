"""`medfound publish --layout kaggle|huggingface`: written, verified and loaded as users load them."""
from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from medfound.cli.main import main
from medfound.resolve import load
from medfound.export.publish import probe_image
from medfound.export.verify import VerifyError, verify
from tests.test_publish import NAME, _ssh_key, make_release
from tests.tiny_runs import write_tiny_run


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    write_tiny_run(root / "run", seed=3, modality="cxr", init="bit-s", steps=2,
                   data="unit-test chest X-rays")
    release_dir = root / "release"
    make_release([(NAME, root / "run")], release_dir, allow_test_arch=True)
    private, _ = _ssh_key(root / "publisher")
    for layout in ("kaggle", "huggingface"):
        assert main(["publish", str(release_dir), "--layout", layout, "--allow-test-modules",
                     "--kaggle-owner", "someone", "--sign", str(private)]) == 0
    return release_dir


def _reference(release):
    module = tf.saved_model.load(str(release / NAME))
    images = tf.constant(probe_image(64))
    feature_map = module(images).numpy()
    return feature_map, feature_map.mean(axis=(1, 2))  # the pooled embedding, as the colab


def test_kaggle_layout_metadata_and_loading(release):
    import tensorflow_hub as hub

    root = release / "kaggle"
    model = json.loads((root / "model-metadata.json").read_text())
    assert (model["ownerSlug"], model["slug"]) == ("someone", "medfound-remedis")
    assert "Intended use" in model["description"]  # the release card
    variation = root / "tensorFlow2" / NAME
    instance = json.loads((variation / "model-instance-metadata.json").read_text())
    assert instance["framework"] == "tensorFlow2" and instance["instanceSlug"] == NAME
    assert instance["modelSlug"] == "medfound-remedis" and instance["fineTunable"] is True
    assert instance["licenseName"] == "Apache 2.0"
    assert instance["trainingData"] == ["unit-test chest X-rays"]
    assert instance["modelInstanceType"] == "ExternalVariant"
    assert instance["externalBaseModelUrl"].startswith("https://")
    features, pooled = _reference(release)
    images = tf.constant(probe_image(64))
    np.testing.assert_allclose(hub.load(str(variation))(images).numpy(), features, atol=1e-5)
    native = load(variation)(images)["embedding"]
    np.testing.assert_allclose(np.asarray(native), pooled, atol=1e-4)


def test_huggingface_layout_card_and_loading(release):
    repo = release / "huggingface" / NAME
    card = (repo / "README.md").read_text()
    header = card.split("---\n")[1]  # the YAML block the Hub reads
    assert "library_name: keras" in header and "license: apache-2.0" in header
    assert "pipeline_tag: image-feature-extraction" in header and "- test-only" in header
    assert "## Probe fingerprint" in card
    assert {"config.json", "metadata.json", "model.weights.h5"} <= {p.name for p in repo.iterdir()}
    _, pooled = _reference(release)
    images = tf.constant(probe_image(64))
    np.testing.assert_allclose(np.asarray(load(repo)(images)["embedding"]), pooled, atol=1e-4)
    # what `keras.saving.load_model('hf://OWNER/NAME')` does after downloading the repository
    direct = keras.saving.load_model(str(repo))
    np.testing.assert_allclose(np.asarray(direct(images)["embedding"]), pooled, atol=1e-4)


@pytest.mark.parametrize("layout", ["kaggle", "huggingface"])
def test_verify_checks_both_layouts(release, tmp_path, layout, capsys):
    key = release.parent / "publisher.pub"
    assert main(["verify", str(release / layout), "--key", str(key)]) == 0
    out = capsys.readouterr().out
    assert f"{NAME}: ok" in out and "good signature" in out
    copy = tmp_path / layout
    shutil.copytree(release / layout, copy)
    unit = copy / ("tensorFlow2" if layout == "kaggle" else "") / NAME
    weights = (unit / "variables" / "variables.data-00000-of-00001" if layout == "kaggle"
               else unit / "model.weights.h5")
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    (unit / "extra.py").write_text("print('hello')\n")
    with pytest.raises(VerifyError) as err:
        verify(copy)
    problems = "\n".join(err.value.problems)
    assert weights.relative_to(copy).as_posix() in problems and "does not match" in problems
    assert "extra.py: not listed" in problems


def test_a_layout_folder_that_medfound_did_not_write_is_not_replaced(release, tmp_path):
    copy = tmp_path / "release"
    shutil.copytree(release / NAME, copy / NAME)
    (copy / "kaggle").mkdir()
    (copy / "kaggle" / "notes.txt").write_text("mine")
    assert main(["publish", str(copy), "--layout", "kaggle", "--allow-test-modules"]) == 2
    assert (copy / "kaggle" / "notes.txt").read_text() == "mine"
