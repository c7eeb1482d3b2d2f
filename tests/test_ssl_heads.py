"""SimCLR v2 projection head: structure, shapes, serialization and cross-replica batch norm."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from medfound.ssl import ProjectionHead


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(8, 24)).astype(np.float32)


def test_output_shape_and_structure(features):
    head = ProjectionHead(num_layers=3, output_dim=16)
    out = head(features, training=True)
    assert tuple(out.shape) == (8, 16)
    assert head.compute_output_shape((None, 24)) == (None, 16)
    kernels = [d.kernel.shape for d in head.dense_layers]
    assert kernels == [(24, 24), (24, 24), (24, 16)]  # hidden_dim defaults to the input width
    assert all(not d.use_bias for d in head.dense_layers)
    assert [n.center for n in head.norm_layers] == [True, True, False]
    assert all(n.synchronized for n in head.norm_layers)
    # The last layer has no ReLU: a batch-normalised projection has negative entries.
    assert float(tf.reduce_min(out)) < 0.0
    # Hidden layers do: the first two layers' output is non-negative.
    hidden = features
    for i in range(2):
        hidden = keras.ops.relu(head.norm_layers[i](head.dense_layers[i](hidden), training=True))
    assert float(tf.reduce_min(hidden)) >= 0.0


def test_hidden_dim_and_single_layer(features):
    head = ProjectionHead(num_layers=2, hidden_dim=32, output_dim=8)
    head(features)
    assert [d.kernel.shape for d in head.dense_layers] == [(24, 32), (32, 8)]
    linear = ProjectionHead(num_layers=1, output_dim=5)
    assert tuple(linear(features).shape) == (8, 5)
    assert [d.kernel.shape for d in linear.dense_layers] == [(24, 5)]


def test_variable_paths_name_batch_normalization(features):
    """LARS' default exclusions rely on the BN variables' paths containing 'batch_normalization'."""
    head = ProjectionHead()
    head(features)
    norm_paths = [v.path for n in head.norm_layers for v in n.trainable_variables]
    assert norm_paths and all("batch_normalization" in p for p in norm_paths)
    assert all("batch_normalization" not in d.kernel.path for d in head.dense_layers)


def test_serialization_round_trip(features, tmp_path):
    head = ProjectionHead(num_layers=3, hidden_dim=20, output_dim=12, bn_momentum=0.8)
    inputs = keras.Input((24,))
    model = keras.Model(inputs, head(inputs))
    head(features, training=True)  # move the BN moving statistics away from their initial values
    path = tmp_path / "head.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    restored_head = restored.layers[-1]
    assert isinstance(restored_head, ProjectionHead)
    assert restored_head.get_config() == head.get_config()
    np.testing.assert_allclose(restored(features, training=False).numpy(),
                               model(features, training=False).numpy(), rtol=1e-6, atol=1e-6)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert clone.get_config()["output_dim"] == 12 and clone.name == head.name


def test_batch_norm_statistics_are_cross_replica(features, two_replica_strategy):
    """In training mode, the head on two halves (two replicas) equals it on the whole batch."""
    strategy = two_replica_strategy
    single = ProjectionHead(output_dim=16)
    expected = single(features, training=True).numpy()
    with strategy.scope():
        mirrored = ProjectionHead(output_dim=16)
        mirrored.build((None, 24))
    mirrored.set_weights(single.get_weights())  # training mode: moving statistics are unused

    values = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(features[4 * ctx.replica_id_in_sync_group:][:4]))
    outputs = strategy.run(tf.function(lambda x: mirrored(x, training=True)), args=(values,))
    got = np.concatenate([x.numpy() for x in strategy.experimental_local_results(outputs)])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # Half-batch statistics would give a different answer: the comparison above can fail.
    local_only = np.concatenate([single(features[:4], training=True).numpy(),
                                 single(features[4:], training=True).numpy()])
    assert np.abs(local_only - expected).max() > 1e-2


@pytest.mark.parametrize("kwargs", [dict(num_layers=0), dict(output_dim=-1), dict(hidden_dim=0),
                                    dict(num_layers=2.5), dict(bn_momentum=1.5),
                                    dict(bn_epsilon=0.0)])
def test_impossible_configuration_is_refused(kwargs):
    with pytest.raises(ValueError, match="ProjectionHead"):
        ProjectionHead(**kwargs)
