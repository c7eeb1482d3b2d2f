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
from medfound.formats.metadata import METADATA_ASSET, read_metadata
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


def test_hub_load_returns_the_raw_block4_map_like_the_physionet_files(exported):
    import tensorflow_hub as hub

    from medfound.models.bit_names import variable_names

    backbone, out = exported
    module = hub.load(str(out))
    x = images()
    features = module(x)
    assert features.shape == (2, 2, 2, 1024) and features.dtype == tf.float32
    want = backbone(x)
    scale = np.abs(want["block4"].numpy()).max()
    np.testing.assert_allclose(features.numpy() / scale, want["block4"].numpy() / scale, atol=1e-5)
    np.testing.assert_allclose(tf.reduce_mean(features, axis=[-3, -2]).numpy() / scale,
                               want["embedding"].numpy() / scale, atol=1e-5)
    assert module(images(1, 96, 64), training=False).shape == (1, 3, 2, 1024)
    # One signature with one output, so positional clients read the map.
    assert list(module.signatures) == ["serving_default"]
    named = module.signatures["serving_default"](images=tf.constant(x))
    assert list(named) == ["output_1"]
    np.testing.assert_allclose(named["output_1"].numpy(), features.numpy(), rtol=1e-6)
    # The richer outputs are a plain function, not a signature.
    rich = module.features(tf.constant(x))
    assert set(rich) == {"stem", "block1", "block2", "block3", "block4", "embedding"}
    for key in ("block1", "block2", "block3", "block4", "embedding"):
        ref = want[key].numpy()
        np.testing.assert_allclose(rich[key].numpy() / np.abs(ref).max(),
                                   ref / np.abs(ref).max(), atol=1e-5)
    # BiT paths as names, in the PhysioNet order, no final GroupNorm, all trainable.
    names = [v.name for v in module.trainable_variables]
    assert names == [f"{n}:0" for n in variable_names(backbone.spec)]
    assert names[-3:] == ["block4/unit01/c/group_norm/gamma:0", "block4/unit01/c/group_norm/beta:0",
                          "block4/unit01/c/standardized_conv2d/kernel:0"]
    assert not any(n.startswith("group_norm/") for n in names)
    assert len(module.variables) == len(names) == 41
    assert list(module.regularization_losses) == []


def test_static_output_shape_in_tf_keras_and_in_graphs(exported):
    tf_keras = pytest.importorskip("tf_keras", reason="tf-keras (test extra) not installed")
    import tensorflow_hub as hub

    _, out = exported
    module = tf.saved_model.load(str(out))
    traced = tf.function(lambda x: module(x)).get_concrete_function(
        tf.TensorSpec([None, 448, 448, 3], tf.float32))
    assert traced.structured_outputs.shape.as_list() == [None, 14, 14, 1024]
    client = tf_keras.Sequential([hub.KerasLayer(str(out), input_shape=(448, 448, 3)),
                                  tf_keras.layers.AveragePooling2D((7, 7)),
                                  tf_keras.layers.Flatten(), tf_keras.layers.Dense(3)])
    assert client.layers[0].output_shape == (None, 14, 14, 1024)
    assert client.output_shape == (None, 3)
    assert client.predict(images(1, 448, 448), verbose=0).shape == (1, 3)


def test_out_of_range_policy_tolerates_resampling_overshoot(loaded):
    overshoot = np.clip(images() * 1.1 - 0.05, -0.05, 1.05).astype(np.float32)  # bicubic-like
    assert loaded(tf.constant(overshoot)).shape == (2, 2, 2, 1024)


@pytest.mark.parametrize("bad, advice", [
    (images() * 255.0, "divide by 255"),
    ((images() - 0.5) / 0.25, "do not mean/std-normalise"),
    (images() * 2.0 - 1.0, r"scale to \[-1, 1\]"),
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
    with pytest.raises(ExportError, match="was not written by medfound export"):
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
    from medfound.formats.metadata import ModuleMetadata

    custom = ModuleMetadata(name="cxr-r50x1-scratch", arch="r50x1", modality="cxr",
                            input_size=448, embedding_dim=2048, init="random")
    assert custom.summary_lines()[0].startswith("note: a custom module")


def test_fold_is_an_explicit_inference_form_that_refuses_training(exported, tmp_path):
    from medfound.resolve import load

    backbone, out = exported
    folded_dir = tmp_path / "folded"
    assert cli(export_cli, [str(out.parent / "run"), "--name", NAME, "--out", str(folded_dir),
                            "--allow-test-arch", "--fold"]) == 0
    assert read_metadata(folded_dir).kernel_form == "folded"
    assert read_metadata(out).kernel_form == "standardize_in_graph"
    folded, plain = tf.saved_model.load(str(folded_dir)), tf.saved_model.load(str(out))
    assert list(folded.trainable_variables) == [] and len(plain.trainable_variables) == 41
    x = tf.constant(images())
    want = plain(x).numpy()
    np.testing.assert_allclose(folded(x).numpy() / np.abs(want).max(), want / np.abs(want).max(),
                               atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="folded inference form"):
        folded(x, training=True)
    native = load(folded_dir)  # re-standardising folded kernels leaves them as they are
    np.testing.assert_allclose(native(images())["feature_map"].numpy() / np.abs(want).max(),
                               want / np.abs(want).max(), atol=1e-4)
    with pytest.raises(ExportError, match="SavedModel format only"):
        export_module(out.parent / "run", tmp_path / "k", name=NAME, fmt="keras", fold=True,
                      allow_test_arch=True)


def test_native_backbone_refuses_the_inputs_the_module_refuses():
    from medfound.models.input_check import ImageInputError

    model = build_backbone("tiny", final_norm=False)
    for bad, advice in ((images() * 255, "divide by 255"),
                        ((images() * 255).astype(np.uint8), r"astype\('float32'\) / 255"),
                        (np.where(images() > 0.5, np.nan, images()), "NaN"),
                        (images() * 2 - 1, r"scale to \[-1, 1\]")):
        with pytest.raises(ImageInputError, match=advice):
            model(bad)
    assert model(images().astype(np.float64))["embedding"].shape == (2, 1024)  # NumPy's default


def test_export_parity_guard_refuses_a_disagreeing_graph_at_the_stated_tolerance(tmp_path):
    """The guard that keeps a wrong graph from being written: a backbone's real embedding, and
    the same moved by twice / half the tolerance (relative to its largest value)."""
    from pathlib import Path

    from medfound.export.exporter import EXPORT_PARITY_TOLERANCE, check_parity

    probe = np.linspace(0.0, 1.0, 2 * 64 * 64 * 3, dtype=np.float32).reshape(2, 64, 64, 3)
    want = build_backbone("tiny")(probe, training=False)["embedding"].numpy().astype(np.float64)
    scale = np.abs(want).max()
    check_parity(want, want, tmp_path / "m")
    check_parity(want + 0.5 * EXPORT_PARITY_TOLERANCE * scale, want, tmp_path / "m")
    for bad in (want + 2 * EXPORT_PARITY_TOLERANCE * scale, want * np.nan):
        with pytest.raises(ExportError, match="disagrees with the backbone.*not writing"):
            check_parity(bad, want, tmp_path / "m")
    card = (Path(__file__).resolve().parents[1] / "MODEL_CARD.md").read_text()
    stated = card.split("Export tolerance:")[1].split("\n- ")[0]
    written = f"{EXPORT_PARITY_TOLERANCE:.0e}".replace("e-0", "e-")  # 1e-3
    assert f"within {written} " in stated and "1e-4" not in stated


def test_module_variables_share_the_backbone_weights_instead_of_copying_them():
    """The hub module's variables are built from the backbone's own tensors: no NumPy copy of
    the weights (tracemalloc sees NumPy's buffers; the old path made one per variable) and no
    TensorFlow copy (the buffers are shared), so export holds the weights once, not three
    times (bench/memory.py). Sharing is copy-on-write: changing the backbone later leaves the
    module's values as they were."""
    import tracemalloc

    from medfound.export.hub_module import RemedisModule

    backbone = build_backbone("small", final_norm=False)
    weight_bytes = sum(int(np.prod(w.shape)) * 4 for w in backbone.weights)
    tracemalloc.start()
    try:
        module = RemedisModule(backbone, "{}", __file__)
        numpy_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert numpy_peak < weight_bytes / 10, (numpy_peak, weight_bytes)
    ours = {v.name[:-2]: v for v in module.variables}
    kernel = backbone.get_layer("block4_unit02_c_standardized_conv2d").kernel
    shared = ours["block4/unit02/c/standardized_conv2d/kernel"]
    assert np.shares_memory(np.asarray(shared.read_value()),
                            np.asarray(kernel.value.read_value()))
    before = shared.numpy()
    kernel.assign(kernel.value + 1.0)
    np.testing.assert_array_equal(shared.numpy(), before)
    np.testing.assert_array_equal(kernel.numpy(), before + 1.0)
