"""PhysioNet fidelity: a file built like the real REMEDIS releases, and medfound's own export
of the same weights, behave the same in every client and in every medfound command."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from medfound.cli.main import main
from medfound.export.exporter import export_module
from medfound.resolve import load
from medfound.formats.module_info import describe
from medfound.models.bit import BiTBackbone
from medfound.models.configs import get_arch
from tests.bit_reference import bit_random_checkpoint

tf_keras = pytest.importorskip("tf_keras", reason="tf-keras (test extra) builds the fixture")
from tests.physionet_format import BLOCK_UNITS, write_physionet_module  # noqa: E402

NAME = "cxr-50x1-remedis-m"
SMALL_UNITS, SMALL_WIDTH = (1, 1, 1, 1), 0.5  # the "tiny" architecture


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A BiT-format r50x1 .npz, the PhysioNet-style file of it, and medfound's export of it."""
    root = tmp_path_factory.mktemp("physionet")
    npz = root / "BiT-M-R50x1.npz"
    np.savez(npz, **bit_random_checkpoint(BLOCK_UNITS["r50x1"], 1, seed=5))
    physionet = write_physionet_module(npz, root / "release" / NAME, BLOCK_UNITS["r50x1"], 1)
    ours = export_module(npz, root / "ours" / NAME, name=NAME, modality="cxr")
    return npz, physionet, ours


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    """The same pair for the test-only ``tiny`` BiT (units 1,1,1,1, width 0.5): the client and
    command paths are the same code for every size, and this one runs them in seconds."""
    root = tmp_path_factory.mktemp("physionet-tiny")
    npz = root / "tiny.npz"
    np.savez(npz, **bit_random_checkpoint(SMALL_UNITS, SMALL_WIDTH, seed=9))
    physionet = write_physionet_module(npz, root / "release" / "tiny-physionet", SMALL_UNITS,
                                       SMALL_WIDTH)
    ours = export_module(npz, root / "ours" / "tiny-medfound", name=NAME, arch="tiny",
                         init="bit-m", allow_test_arch=True)
    return npz, physionet, ours


def images(batch=1, size=64, seed=0):
    return np.random.RandomState(seed).rand(batch, size, size, 3).astype(np.float32)


# Random BiT weights make a badly conditioned network: moving the input by one float32 ulp
# moves the r50x1 block4 map by 1.2e-5 (relative L2), so two correct float32 implementations
# that round differently (tf-keras vs medfound convolutions) differ by up to ~1e-4. The
# comparisons allow 2e-4, or for deeper nets ten times the reference's own one-ulp sensitivity
# (measured in the test); medfound's own graph and its Keras model agree to 0 on these inputs.
FLOAT32_NOISE = 2e-4


def relative_error(a, b) -> float:
    """||a - b|| / ||b|| in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def close(a, b, tol=FLOAT32_NOISE):
    """Relative error ||a - b|| / ||b|| at most ``tol``."""
    error = relative_error(a, b)
    assert error <= tol, error


def test_the_fixture_has_the_published_structure(files):
    import tensorflow_hub as hub

    _, physionet, ours = files
    for path in (physionet, ours):
        loaded = tf.saved_model.load(str(path))
        assert list(loaded.signatures) == ["serving_default"]
        assert len(loaded.signatures["serving_default"].structured_outputs) == 1
        layer = hub.KerasLayer(str(path), trainable=True, input_shape=(448, 448, 3))
        client = tf_keras.Sequential([layer])
        assert client.output_shape == (None, 14, 14, 2048)  # what AveragePooling2D((7, 7)) needs
        assert layer.count_params() == 23_496_256 == get_arch("r50x1").num_params(final_norm=False)
        names = [v.name for v in loaded.trainable_variables]
        assert len(names) == 149 and "block1/unit01/a/group_norm/gamma:0" in names
        assert not any(n.startswith("group_norm") for n in names)
    fixture = tf.saved_model.load(str(physionet))
    assert all(hasattr(fixture, a) for a in ("_root", "_blocks", "keras_api",
                                             "call_and_return_all_conditional_losses"))
    assert not hasattr(fixture, "_pre_head")
    ours_loaded = tf.saved_model.load(str(ours))
    assert {v.name for v in fixture.variables} == {v.name for v in ours_loaded.variables}


@pytest.mark.parametrize("size", [224, 448])
def test_same_weights_same_function(files, size):
    _, physionet, ours = files
    x = images(1, size, seed=size)
    theirs = tf.saved_model.load(str(physionet))(x).numpy()
    assert theirs.shape == (1, size // 32, size // 32, 2048)
    close(tf.saved_model.load(str(ours))(x).numpy(), theirs)


def test_r152x2_module_has_the_published_variables_and_the_fixture_function():
    """The 152x2 facts (455 trainable variables, the last ones named) without writing 2 GB of
    SavedModels: both objects in memory, same weights by name, compared at a small size.
    bench/physionet_parity.py runs the full-size file round trip (BENCHMARKS.md section 8)."""
    import json as _json

    from medfound.export.hub_module import RemedisModule
    from medfound.models.bit import build_backbone
    from tests.physionet_format import PhysioNetStyleResnet

    backbone = build_backbone("r152x2", final_norm=False)
    ours = RemedisModule(backbone, _json.dumps({}), __file__)
    names = [v.name for v in ours.trainable_variables]
    assert len(names) == 455 and names[-3:] == [
        "block4/unit03/c/group_norm/gamma:0", "block4/unit03/c/group_norm/beta:0",
        "block4/unit03/c/standardized_conv2d/kernel:0"]
    fixture = PhysioNetStyleResnet(BLOCK_UNITS["r152x2"], 2)
    fixture.call(tf.zeros([1, 32, 32, 3]))
    assert sorted(v.name for v in fixture.trainable_variables) == sorted(names)
    mine = {v.name: v for v in ours.variables}
    for variable in fixture.variables:
        variable.assign(mine[variable.name])
    x = images(1, 64, seed=7)
    want = fixture.call(x).numpy()
    floor = relative_error(fixture.call(np.nextafter(x, np.float32(2))).numpy(), want)
    print(f"r152x2 ours vs fixture {relative_error(ours(x).numpy(), want):.2e}, "
          f"fixture moved by one input ulp {floor:.2e}")
    close(ours(x).numpy(), want, tol=max(FLOAT32_NOISE, 10 * floor))


@pytest.fixture(scope="module")
def native(files):
    """``medfound.load`` of the r50x1 PhysioNet-style file (loaded once: it checks the file's own
    output, which costs a forward pass of each)."""
    return load(files[1])


def test_medfound_load_and_info_read_the_file_by_name(files, native, capsys):
    _, physionet, _ = files
    model = native
    assert isinstance(model, BiTBackbone) and model.spec.name == "r50x1"
    assert not model.final_norm and model.source.format == "physionet"
    assert model.source.input_size == 448 and model.source.input_scaling == "bit"
    x = images(2)
    close(model(x)["feature_map"].numpy(), tf.saved_model.load(str(physionet))(x).numpy())
    assert main(["info", str(physionet)]) == 0
    printed = capsys.readouterr().out
    for line in ("format: physionet", "arch: r50x1", "num_params: 23496256",
                 "embedding_dim: 2048", "input_size: 448", f"name: {NAME}"):
        assert line in printed, line


def test_load_matches_by_name_not_position(files, native):
    """Each weight is the file's variable of the same BiT name."""
    _, physionet, _ = files
    info = describe(physionet)
    assert info.num_variables == 149 and info.arch == "r50x1"
    model = native
    gamma = model.get_layer("block2_unit01_b_group_norm").gamma.numpy()
    loaded = tf.saved_model.load(str(physionet))
    (want,) = [v for v in loaded.variables if v.name == "block2/unit01/b/group_norm/gamma:0"]
    np.testing.assert_array_equal(gamma, want.numpy())


def test_a_mislabeled_or_unknown_folder_is_refused_saying_what_was_found(files, tmp_path):
    _, physionet, _ = files
    import shutil

    wrong = tmp_path / "cxr-152x2-remedis-m"
    shutil.copytree(physionet, wrong)
    with pytest.raises(ValueError, match=r"named cxr-152x2-remedis-m .*units \[3, 4, 6, 3\]"):
        load(wrong)


def test_export_converts_the_file_to_keras_and_onnx(small_files, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnx extra not installed")
    _, physionet, _ = small_files
    x = images(1)
    want = tf.saved_model.load(str(physionet))(x).numpy()
    # Only because 'tiny' cannot carry a REMEDIS folder name (which gives name, init, modality).
    test_arch = ["--name", NAME, "--init", "bit-m", "--modality", "cxr", "--allow-test-arch"]
    assert main(["export", str(physionet), "--format", "keras", "--out", str(tmp_path),
                 *test_arch]) == 0
    (keras_file,) = tmp_path.glob("*.keras")
    close(load(keras_file)(x)["feature_map"].numpy(), want)
    assert main(["export", str(physionet), "--format", "onnx", "--out", str(tmp_path),
                 *test_arch]) == 0
    (onnx_file,) = tmp_path.glob("*.onnx")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    close(session.run(None, {session.get_inputs()[0].name: x})[0], want)


def test_tf2onnx_cli_output_0_is_the_map_for_both_files(small_files, tmp_path):
    """What a published tool does: ``python -m tf2onnx.convert --saved-model DIR`` and read
    ``session.get_outputs()[0]``; for both files that output is the block4 map."""
    import subprocess
    import sys

    ort = pytest.importorskip("onnxruntime", reason="onnx extra not installed")
    pytest.importorskip("tf2onnx", reason="onnx extra not installed")
    _, physionet, ours = small_files
    x = images(2, 64, seed=11)
    outputs = []
    for path in (physionet, ours):
        onnx_file = tmp_path / f"{path.name}.onnx"
        done = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model",
                               str(path), "--output", str(onnx_file)],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        first = session.get_outputs()[0].name
        (got,) = session.run([first], {session.get_inputs()[0].name: x})
        close(got, tf.saved_model.load(str(path))(x).numpy())
        outputs.append(got)
    assert outputs[0].shape == (2, 2, 2, 1024)
    close(outputs[1], outputs[0])


def test_clients_get_equal_numbers_from_both_files(small_files):
    """The upstream colab's TF1-graph cells and tf-keras / Keras 3 client code, on both files."""
    import keras
    import tensorflow_hub as hub

    _, physionet, ours = small_files
    x, big = images(1, 64, seed=3), images(1, 448, seed=4)
    results = []
    for path in (physionet, ours):
        graph = tf.Graph()
        with graph.as_default():
            module = hub.load(str(path))
            placeholder = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
            embedding = tf.reduce_mean(module(tf.clip_by_value(placeholder, 0, 1)), axis=[-3, -2])
            with tf.compat.v1.Session(graph=graph) as session:
                session.run(tf.compat.v1.global_variables_initializer())
                colab = session.run(embedding, {placeholder: x})
        client = tf_keras.Sequential([hub.KerasLayer(str(path), input_shape=(448, 448, 3)),
                                      tf_keras.layers.AveragePooling2D((7, 7)),
                                      tf_keras.layers.Flatten(),
                                      tf_keras.layers.Dense(1, kernel_initializer="ones")])
        assert client.layers[0].output_shape == (None, 14, 14, 1024)
        scored = client.predict(big, verbose=0)
        tfsm = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
        (signature_map,) = tfsm(x).values()
        results.append((colab, scored, np.asarray(signature_map)))
    for theirs, mine in zip(*results):
        close(mine, theirs)


def test_tfsmlayer_fine_tunes_the_fixture(small_files):
    import keras

    from medfound.models.bit_names import variable_names

    _, physionet, _ = small_files
    layer = keras.layers.TFSMLayer(str(physionet), call_endpoint="serving_default",
                                   trainable=True)
    inputs = keras.Input((64, 64, 3))
    (feature_map,) = layer(inputs).values()
    model = keras.Model(inputs, keras.layers.Dense(1, trainable=False)(
        keras.layers.GlobalAveragePooling2D()(feature_map)))
    model.compile(keras.optimizers.SGD(1e-3), "mse")
    before = [w.numpy().copy() for w in layer.trainable_weights]
    model.train_on_batch(images(2), np.ones((2, 1)))
    assert len(before) == len(variable_names(get_arch("tiny")))
    assert any(not np.allclose(b, w.numpy()) for b, w in zip(before, layer.trainable_weights))


def test_every_command_takes_the_file_with_no_extra_flag(files, small_files, shared_data,
                                                         tmp_path):
    """``embed`` on the REMEDIS-named r50x1 file takes its input size (448) from the name; the
    training commands run on the small file (the same code path, seconds instead of minutes)."""
    _, physionet, _ = files
    _, small, _ = small_files
    folder = tmp_path / "pngs"
    folder.mkdir()
    from PIL import Image

    pixels = [(images(1, 40, seed=i)[0] * 255).astype("uint8") for i in range(2)]
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{i}.png")
    out = tmp_path / "emb.npz"
    assert main(["embed", "--module", str(physionet), "--input", str(folder),
                 "--out", str(out)]) == 0
    from medfound.embed import prepare_image, read_embeddings

    paths, vectors = read_embeddings(out)
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["0.png", "1.png"]
    at_448 = tf.stack([prepare_image(tf.constant(p / 255.0, tf.float32), 448) for p in pixels])
    close(vectors, tf.reduce_mean(tf.saved_model.load(str(physionet))(at_448), axis=[1, 2]))
    npz = tmp_path / "pneumonia-subset.npz"  # a few real images per split
    with np.load(shared_data / "pneumoniamnist.npz") as real:
        subset = {}
        for split, count in (("train", 60), ("val", 20), ("test", 24)):
            labels = real[f"{split}_labels"][:, 0]
            keep = np.concatenate([np.flatnonzero(labels == c)[:count // 2] for c in (0, 1)])
            subset[f"{split}_images"] = real[f"{split}_images"][keep]
            subset[f"{split}_labels"] = real[f"{split}_labels"][keep]
    np.savez(npz, **subset)
    common = ["--task", "medmnist", "--data", str(npz), "--image-size", "32", "--n-boot", "20",
              "--quiet"]
    assert main(["finetune", "--module", str(small), "--label-fraction", "0.5", "--epochs", "1",
                 "--out", str(tmp_path / "ft"), *common]) == 0
    assert main(["evaluate", "--model", str(tmp_path / "ft"), "--out", str(tmp_path / "ev"),
                 *common]) == 0
    assert main(["label-efficiency", "--modules", str(small), "--baseline", str(small),
                 "--fractions", "0.5", "--seeds", "0", "--epochs", "1",
                 "--out", str(tmp_path / "le"), *common]) == 0
    results = json.loads((tmp_path / "le" / "results.json").read_text())
    assert {r["module"] for r in results["runs"]} == {str(small)}


def test_modules_from_before_the_physionet_format_still_load(tmp_path):
    from medfound.models.bit import build_backbone
    from tests.legacy_v1_module import write_legacy_module

    import keras

    keras.utils.set_random_seed(8)
    old = build_backbone("tiny")
    path = write_legacy_module(old, tmp_path / "legacy-tiny")
    assert describe(path).format == "medfound-v1"
    model = load(path)
    assert model.final_norm  # the v1 output was BiT's GroupNorm'd map: pre_logits is its mean
    x = images(2)
    old_output = tf.saved_model.load(str(path))(x).numpy()
    close(model(x)["pre_logits"].numpy(), old_output.mean(axis=(1, 2)))
    close(model(x)["embedding"].numpy(), old(x)["embedding"].numpy())
