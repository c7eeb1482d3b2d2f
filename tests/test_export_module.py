"""Export of a run as a REMEDIS hub module: layout, interface, input checks, metadata, names."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from medfound.cli.main import main
from medfound.cli import export as export_cli
from medfound.cli import info as info_cli
from medfound.export.exporter import ExportError, ExportOptions, export_module, resolve_spec
from medfound.export.metadata import METADATA_ASSET, read_metadata
from medfound.models.bit import build_backbone
from medfound.runinfo import RunInfo
from tests.tiny_runs import write_tiny_run

NAME = "cxr-50x1-remedis-m"


def make_tiny_run(run_dir, *, modality="cxr", init="bit-m", seed=0):
    """A real pretraining-run folder holding a tiny backbone (random weights) and its run.json."""
    return write_tiny_run(run_dir, seed=int(np.random.RandomState(seed).randint(1 << 30)),
                          modality=modality, init=init, steps=7, image_size=64,
                          data="unit-test images", init_path="/data/BiT-M-R50x1.npz",
                          init_sha256="ab" * 32)


def cli(module, argv):
    """Runs the subcommand that ``module`` defines through the real `medfound` entry point."""
    return main([module.__name__.rsplit(".", 1)[-1], *argv])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    backbone = make_tiny_run(root / "run")
    out = root / NAME
    assert cli(export_cli, [str(root / "run"), "--name", NAME, "--out", str(out),
                            "--allow-test-arch"]) == 0
    return backbone, out


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(str(exported[1]))


def images(batch=2, height=64, width=64, seed=0):
    return np.random.RandomState(seed).rand(batch, height, width, 3).astype(np.float32)


def test_savedmodel_layout_and_no_temporaries(exported):
    _, out = exported
    for name in ("saved_model.pb", "fingerprint.pb", "variables", "assets"):
        assert (out / name).exists(), name
    assert (out / METADATA_ASSET).is_file()
    assert [p.name for p in out.parent.iterdir() if ".tmp-" in p.name] == []


def test_hub_load_returns_feature_map_whose_mean_is_pre_logits(exported):
    import tensorflow_hub as hub

    backbone, out = exported
    module = hub.load(str(out))
    x = images()
    features = module(x)
    assert features.shape == (2, 2, 2, 1024) and features.dtype == tf.float32
    want = backbone(x)
    np.testing.assert_allclose(tf.reduce_mean(features, axis=[-3, -2]).numpy(),
                               want["pre_logits"].numpy(), atol=1e-4, rtol=1e-4)
    assert module(images(1, 96, 64), training=False).shape == (1, 3, 2, 1024)
    named = module.signatures["serving_default"](images=tf.constant(x))
    assert set(named) == {"feature_map", "pre_logits", "block1", "block2", "block3", "block4"}
    for key in named:
        np.testing.assert_allclose(named[key].numpy(), want[key].numpy(), atol=1e-4, rtol=1e-4)
    assert len(module.variables) == len(backbone.weights)
    assert len(module.trainable_variables) == len(backbone.trainable_weights)
    assert list(module.regularization_losses) == []


@pytest.mark.parametrize("bad, advice", [
    (images() * 255.0, "divide by 255"),
    (images() - 0.5, "do not mean/std-normalise"),
    (images()[..., :1], "grayscale_to_rgb"),
    (np.concatenate([images(), images()[..., :1]], axis=-1), r"must have 3 \(RGB\) channels"),
    (np.where(images() > 0.5, np.nan, images()).astype(np.float32), "NaN"),
    (images()[0], "add a batch axis"),
    (images(1, 16, 64), ">= 32 pixels"),
])
def test_bad_inputs_raise_errors_that_say_what_to_do(loaded, bad, advice):
    module = loaded
    with pytest.raises(tf.errors.InvalidArgumentError, match=advice):
        module(tf.constant(bad))


def test_metadata_is_carried_and_info_prints_it(exported, capsys):
    _, out = exported
    meta = read_metadata(out)
    assert (meta.name, meta.arch, meta.modality, meta.input_size) == (NAME, "tiny", "cxr", 448)
    assert (meta.embedding_dim, meta.init, meta.steps, meta.test_only) == (1024, "bit-m", 7, True)
    assert meta.init_checkpoint == "BiT-M-R50x1.npz" and meta.init_sha256 == "ab" * 32
    assert meta.pretraining_data == "unit-test images" and meta.medfound_version
    module = tf.saved_model.load(str(out))
    assert json.loads(module.metadata_json().numpy()) == json.loads(meta.to_json())
    assert cli(info_cli, [str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"name: {NAME}" in printed and "NOT a REMEDIS model" in printed
    assert cli(info_cli, [str(out.parent / "missing")]) == 2


def test_real_architectures_are_never_mislabeled():
    r50 = build_backbone("r50x1")
    run = RunInfo(arch="r50x1", modality="cxr", init="bit-m")
    assert resolve_spec(run, r50, ExportOptions()).name == NAME  # the run says everything
    with pytest.raises(ExportError, match="needs architecture r152x2"):
        resolve_spec(run, r50, ExportOptions(name="cxr-152x2-remedis-m", allow_test_arch=True))
    with pytest.raises(ExportError, match="must start from bit-s"):
        resolve_spec(run, r50, ExportOptions(name="cxr-50x1-remedis-s"))
    with pytest.raises(ExportError, match="pretrained on cxr data"):
        resolve_spec(run, r50, ExportOptions(name="path-50x1-remedis-m"))
    with pytest.raises(ExportError, match="valid names"):
        resolve_spec(run, r50, ExportOptions(name="cxr-50x3-remedis-m"))
    with pytest.raises(ExportError, match="initialised from 'random'"):
        resolve_spec(RunInfo(arch="r50x1", modality="cxr"), r50, ExportOptions(name=NAME))
    with pytest.raises(ExportError, match="does not record its modality"):
        resolve_spec(RunInfo(arch="r50x1", init="bit-m"), r50, ExportOptions())


def test_test_architectures_need_the_explicit_escape_hatch(exported, tmp_path, capsys):
    run_dir = exported[1].parent / "run"
    with pytest.raises(ExportError, match="test-only"):
        export_module(run_dir, tmp_path / "m", name=NAME)
    with pytest.raises(ExportError, match="no REMEDIS name"):
        export_module(run_dir, tmp_path / "m", allow_test_arch=True)
    assert cli(export_cli, [str(run_dir), "--name", "cxr-50x1-remedis-s", "--out",
                            str(tmp_path / "m"), "--allow-test-arch"]) == 2
    assert "must start from bit-s" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_failed_export_leaves_existing_module_untouched(exported, tmp_path):
    _, out = exported
    before = sorted((p.relative_to(out), p.stat().st_size) for p in out.rglob("*"))
    run_dir = tmp_path / "bad-run"
    run_dir.mkdir()
    build_backbone("small").save_weights(str(run_dir / "backbone.weights.h5"))
    RunInfo(arch="tiny", modality="cxr", init="bit-m").save(run_dir)  # weights do not fit
    with pytest.raises(ExportError, match="does not fit"):
        export_module(run_dir, out, name=NAME, allow_test_arch=True)
    assert sorted((p.relative_to(out), p.stat().st_size) for p in out.rglob("*")) == before


def test_export_never_replaces_a_folder_that_is_not_a_module(exported, tmp_path):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not a SavedModel folder"):
        export_module(exported[1].parent / "run", precious, name=NAME, allow_test_arch=True)
    assert (precious / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_custom_names_for_users_own_modules(tmp_path):
    """A model trained from scratch (or any non-REMEDIS recipe) is exported under its own name,
    which may not pass for one of the eight."""
    run_dir = tmp_path / "run"
    tiny = write_tiny_run(run_dir, modality="path", init="random")
    run = RunInfo.load(run_dir)
    spec = resolve_spec(run, tiny, ExportOptions(name="hospital-path-tiny.v1"))
    assert (spec.name, spec.arch, spec.init, spec.input_size) == (
        "hospital-path-tiny.v1", "tiny", "random", 224)
    for bad, message in (("my-remedis-copy", "reserved for the eight"),
                         ("Bad Name", "invalid module name"), ("../x", "invalid module name")):
        with pytest.raises(ExportError, match=message):
            resolve_spec(run, tiny, ExportOptions(name=bad))
    with pytest.raises(ExportError, match="pass --modality"):
        resolve_spec(RunInfo(arch="tiny"), tiny, ExportOptions(name="no-modality"))
    out = export_module(run_dir, tmp_path / "release", name="hospital-path-tiny.v1")
    meta = read_metadata(out)
    assert meta.name == "hospital-path-tiny.v1" and not meta.is_remedis
    assert meta.test_only  # 'tiny' stays marked as a test architecture under any name
    big = RunInfo(arch="r50x1", modality="cxr", init="random")
    assert resolve_spec(big, build_backbone("r50x1"), ExportOptions(name="cxr-r50x1-scratch")).init \
        == "random"
    from medfound.export.metadata import ModuleMetadata

    custom = ModuleMetadata(name="cxr-r50x1-scratch", arch="r50x1", modality="cxr",
                            input_size=448, embedding_dim=2048, init="random")
    assert custom.summary_lines()[0].startswith("note: a custom module")
