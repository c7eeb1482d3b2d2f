"""Fine-tuning exported modules (tf-keras hub.KerasLayer, Keras 3 TFSMLayer) and medfound.load."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from medfound.export.exporter import export_module
from medfound.resolve import load
from medfound.formats.metadata import read_metadata
from medfound.models.bit import BiTBackbone, build_backbone
from tests.tiny_runs import export_tiny_module

NAME = "path-50x1-remedis-s"


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory):
    return export_tiny_module(tmp_path_factory.mktemp("load"), NAME, seed=3, modality="path",
                              init="bit-s", data="unit test")


def batch(seed=0):
    rng = np.random.RandomState(seed)
    return rng.rand(4, 64, 64, 3).astype(np.float32), np.array([0, 1, 1, 0])


def backbone_step_lowers_loss(model, feature_layer, compile_fn):
    """One SGD step with a frozen head: only the backbone can lower the loss."""
    x, y = batch()
    compile_fn(model)
    before = [w.numpy().copy() for w in feature_layer.trainable_weights]
    features_before = feature_layer(x).numpy()
    loss_before = float(model.evaluate(x, y, verbose=0))
    model.train_on_batch(x, y)
    loss_after = float(model.evaluate(x, y, verbose=0))
    changed = max(float(np.abs(b - w.numpy()).max())
                  for b, w in zip(before, feature_layer.trainable_weights))
    assert changed > 0, "no backbone weight changed"
    assert not np.allclose(feature_layer(x).numpy(), features_before), "features did not change"
    assert loss_after < loss_before, (loss_before, loss_after)


def test_hub_keraslayer_fine_tunes_with_tf_keras(module_dir):
    tf_keras = pytest.importorskip("tf_keras", reason="tf-keras (test extra) not installed")
    import tensorflow_hub as hub

    layer = hub.KerasLayer(str(module_dir), trainable=True)
    head = tf_keras.layers.Dense(2, trainable=False,
                                 kernel_initializer=tf_keras.initializers.RandomNormal(seed=1))
    model = tf_keras.Sequential([tf_keras.Input((64, 64, 3)), layer,
                                 tf_keras.layers.GlobalAveragePooling2D(), head])
    # 41 = the tiny backbone's weights without BiT's final GroupNorm (as the PhysioNet files)
    assert len(layer.trainable_weights) == len(build_backbone("tiny", final_norm=False)
                                               .trainable_weights) == 41

    def compile_fn(m):
        m.compile(tf_keras.optimizers.SGD(0.01),
                  tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    backbone_step_lowers_loss(model, layer, compile_fn)


def test_tfsmlayer_fine_tunes_with_keras3(module_dir):
    import keras

    layer = keras.layers.TFSMLayer(str(module_dir), trainable=True)
    inputs = keras.Input((64, 64, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(layer(inputs))
    head = keras.layers.Dense(2, trainable=False,
                              kernel_initializer=keras.initializers.RandomNormal(seed=1))
    model = keras.Model(inputs, head(pooled))

    def compile_fn(m):
        m.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    backbone_step_lowers_loss(model, layer, compile_fn)


def test_load_rebuilds_the_native_backbone(module_dir):
    model = load(module_dir)
    assert isinstance(model, BiTBackbone) and model.weight_standardization
    assert model.spec.name == "tiny" and model.trainable
    x, _ = batch(1)
    module = tf.saved_model.load(str(module_dir))
    want = module(x).numpy()
    np.testing.assert_allclose(model(x)["feature_map"].numpy() / np.abs(want).max(),
                               want / np.abs(want).max(), atol=1e-5)
    assert len(model.trainable_weights) == len(module.trainable_variables)


def test_load_by_name_from_the_search_path(module_dir):
    model = load(NAME, search_path=[module_dir.parent])
    assert isinstance(model, BiTBackbone)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load("cxr-152x2-remedis-m", search_path=[module_dir.parent])
    with pytest.raises(FileNotFoundError, match="not a module name"):
        load("No Such Module!")
    with pytest.raises(FileNotFoundError, match="module 'my-own-module' not found in .*nothing is"):
        load("my-own-module", search_path=[module_dir.parent])  # custom names are looked up too


def test_keras_format_round_trips_with_metadata(module_dir, tmp_path):
    path = export_module(module_dir.parent / "run", tmp_path, name=NAME, fmt="keras",
                         allow_test_arch=True)
    assert path == tmp_path / f"{NAME}.keras"
    assert read_metadata(path).name == NAME
    model = load(path)
    assert not model.final_norm  # the .keras holds the module form, as the SavedModel
    x, _ = batch(2)
    module = tf.saved_model.load(str(module_dir))
    want = module(x).numpy()
    np.testing.assert_allclose(model(x)["feature_map"].numpy() / np.abs(want).max(),
                               want / np.abs(want).max(), atol=1e-5)


class Foreign(tf.Module):
    """A small image SavedModel written without medfound (as any third-party file would be)."""

    def __init__(self):
        super().__init__()
        self.kernel = tf.Variable(tf.random.stateless_normal([3, 3, 3, 4], seed=[1, 2]) * 0.3,
                                  name="conv/kernel")
        self.bias = tf.Variable(tf.zeros([4]), name="conv/bias")

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images):
        return tf.nn.relu(tf.nn.conv2d(images, self.kernel, 2, "SAME") + self.bias)


def test_load_refuses_a_foreign_savedmodel_and_wrap_takes_it(tmp_path):
    import keras

    from medfound.formats.savedmodel import wrap_saved_model

    foreign = Foreign()
    tf.saved_model.save(foreign, str(tmp_path / "foreign"))
    with pytest.raises(ValueError, match=r"2 variables \(e.g. conv/bias, conv/kernel\).*not a "
                                         "medfound module, a PhysioNet REMEDIS file or a BiT"):
        load(tmp_path / "foreign")
    model = wrap_saved_model(tmp_path / "foreign")
    x, y = batch(4)
    np.testing.assert_allclose(model(x).numpy(), foreign(x).numpy(), atol=1e-6)
    assert len(model.trainable_weights) == 2
    head = keras.layers.Dense(2, trainable=False,
                              kernel_initializer=keras.initializers.RandomNormal(seed=4))
    classifier = keras.Sequential([model, keras.layers.GlobalAveragePooling2D(), head])
    classifier.compile(keras.optimizers.SGD(0.05),
                       keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    kernel_before = model.trainable_weights[0].numpy().copy()
    loss_before = float(classifier.evaluate(x, y, verbose=0))
    classifier.train_on_batch(x, y)
    assert float(classifier.evaluate(x, y, verbose=0)) < loss_before
    assert not np.allclose(model.trainable_weights[0].numpy(), kernel_before)


def test_a_bit_npz_checkpoint_exports_with_its_hash_recorded(tmp_path):
    import keras

    from medfound.models.bit_weights import expected_keys
    from medfound.utils.files import sha256_file

    keras.utils.set_random_seed(21)
    source = build_backbone("tiny")
    npz = tmp_path / "tiny-bit.npz"
    np.savez(npz, **{key: var.numpy() for key, var in expected_keys(source).items()})
    path = export_module(npz, tmp_path / "out", name=NAME, fmt="keras", arch="tiny",
                         init="bit-s", modality="path", allow_test_arch=True)
    meta = read_metadata(path)
    assert (meta.method, meta.steps, meta.init_checkpoint) == ("none", 0, "tiny-bit.npz")
    assert meta.init_sha256 == sha256_file(npz) and meta.init_data.startswith("ImageNet-1k")
    x, _ = batch(5)
    np.testing.assert_allclose(load(path)(x)["embedding"].numpy(),
                               source(x)["embedding"].numpy(), atol=1e-5, rtol=1e-5)
