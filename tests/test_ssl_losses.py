"""NT-Xent: against an independent NumPy version, and split over two replicas against one device."""
from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from medfound.ssl import contrastive_accuracy, logits_entropy, nt_xent_loss

TEMPERATURE = 0.2


def numpy_nt_xent(z_a: np.ndarray, z_b: np.ndarray, temperature: float) -> tuple[float, np.ndarray]:
    """The SimCLR paper's loss written with plain loops over the 2N anchors.

    Returns the mean loss and the per-anchor losses (first the N anchors of view a, then of b).
    """
    z = np.concatenate([z_a, z_b]).astype(np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z_a)
    losses = np.zeros(2 * n)
    for k in range(2 * n):
        positive = k + n if k < n else k - n
        denominator = 0.0
        for j in range(2 * n):
            if j != k:
                denominator += math.exp(float(z[k] @ z[j]) / temperature)
        losses[k] = -(float(z[k] @ z[positive]) / temperature - math.log(denominator))
    return float(losses.mean()), losses


def numpy_direction_a_logits(z_a: np.ndarray, z_b: np.ndarray, temperature: float) -> np.ndarray:
    """Row i: similarities of a_i with [b_0..b_{N-1}, a_0..a_{N-1}] / T, self excluded (-inf)."""
    a = z_a / np.linalg.norm(z_a, axis=1, keepdims=True)
    b = z_b / np.linalg.norm(z_b, axis=1, keepdims=True)
    aa = a @ a.T / temperature
    np.fill_diagonal(aa, -np.inf)
    return np.concatenate([a @ b.T / temperature, aa], axis=1)


@pytest.fixture(scope="module")
def views() -> tuple[np.ndarray, np.ndarray]:
    """Two correlated 'views' of 8 examples in 16 dimensions (not normalised, on purpose)."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(8, 16))
    z_a = 3.0 * (base + 0.3 * rng.normal(size=base.shape))
    z_b = 0.5 * (base + 0.3 * rng.normal(size=base.shape))
    return z_a.astype(np.float32), z_b.astype(np.float32)


def _split_over_replicas(strategy, *arrays):
    """Distributes each array's first axis in equal contiguous halves, replica 0 first."""
    replicas = strategy.num_replicas_in_sync

    def value_fn(ctx):
        out = []
        for array in arrays:
            size = len(array) // replicas
            start = ctx.replica_id_in_sync_group * size
            out.append(tf.constant(array[start:start + size]))
        return tuple(out)

    return strategy.experimental_distribute_values_from_function(value_fn)


def test_single_device_matches_numpy(views):
    z_a, z_b = views
    expected, _ = numpy_nt_xent(z_a, z_b, TEMPERATURE)
    out = nt_xent_loss(z_a, z_b, temperature=TEMPERATURE)
    assert out.loss.shape == ()
    np.testing.assert_allclose(float(out.loss), expected, rtol=1e-5, atol=1e-5)
    assert out.logits.shape == (8, 16)
    np.testing.assert_array_equal(out.labels.numpy(), np.arange(8))
    reference_logits = numpy_direction_a_logits(z_a, z_b, TEMPERATURE)
    finite = np.isfinite(reference_logits)
    np.testing.assert_allclose(out.logits.numpy()[finite], reference_logits[finite], atol=1e-4)
    assert np.all(out.logits.numpy()[~finite] < -1e8)  # masked self-similarities


def test_tf_function_matches_eager(views):
    z_a, z_b = views
    eager = nt_xent_loss(z_a, z_b, TEMPERATURE).loss
    graph = tf.function(lambda a, b: nt_xent_loss(a, b, TEMPERATURE).loss)(z_a, z_b)
    np.testing.assert_allclose(float(graph), float(eager), rtol=1e-6)


def test_loss_depends_on_temperature(views):
    z_a, z_b = views
    for temperature in (0.05, 1.0):
        expected, _ = numpy_nt_xent(z_a, z_b, temperature)
        np.testing.assert_allclose(float(nt_xent_loss(z_a, z_b, temperature).loss), expected,
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("graph", [True, False], ids=["tf_function", "eager"])
def test_two_replicas_equal_single_device(views, two_replica_strategy, graph):
    z_a, z_b = views
    strategy = two_replica_strategy
    single = float(nt_xent_loss(z_a, z_b, TEMPERATURE).loss)
    _, per_anchor = numpy_nt_xent(z_a, z_b, TEMPERATURE)

    def step(a, b):
        out = nt_xent_loss(a, b, TEMPERATURE)
        return out.loss, out.logits, out.labels

    if graph:
        step = tf.function(step)

    losses, logits, labels = strategy.run(step, args=_split_over_replicas(strategy, z_a, z_b))
    losses = [float(x) for x in strategy.experimental_local_results(losses)]
    assert len(losses) == 2
    np.testing.assert_allclose(np.mean(losses), single, rtol=1e-5, atol=1e-5)
    # Each replica's loss is the mean over its own anchors (both directions) with global negatives.
    for replica, loss in enumerate(losses):
        rows = np.arange(4) + 4 * replica
        expected = per_anchor[np.concatenate([rows, rows + 8])].mean()
        np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-5)
    # Logits span the global batch; labels point at each local example's positive.
    replica_logits = strategy.experimental_local_results(logits)
    replica_labels = strategy.experimental_local_results(labels)
    single_out = nt_xent_loss(z_a, z_b, TEMPERATURE)
    np.testing.assert_allclose(np.concatenate([x.numpy() for x in replica_logits]),
                               single_out.logits.numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(np.concatenate([x.numpy() for x in replica_labels]),
                                  single_out.labels.numpy())


def test_unequal_local_batches_find_their_positives(views, two_replica_strategy):
    """A last, partial global batch (5 + 3 examples) still pairs each anchor with its positive."""
    z_a, z_b = views
    strategy = two_replica_strategy
    _, per_anchor = numpy_nt_xent(z_a, z_b, TEMPERATURE)
    bounds = [(0, 5), (5, 8)]

    def value_fn(ctx):
        start, stop = bounds[ctx.replica_id_in_sync_group]
        return tf.constant(z_a[start:stop]), tf.constant(z_b[start:stop])

    values = strategy.experimental_distribute_values_from_function(value_fn)
    losses = strategy.run(tf.function(lambda a, b: nt_xent_loss(a, b, TEMPERATURE).loss),
                          args=values)
    for (start, stop), loss in zip(bounds, strategy.experimental_local_results(losses)):
        rows = np.arange(start, stop)
        expected = per_anchor[np.concatenate([rows, rows + 8])].mean()
        np.testing.assert_allclose(float(loss), expected, rtol=1e-5, atol=1e-5)


def test_two_replica_gradients_equal_single_device(views, two_replica_strategy):
    """Scaled by 1/replicas and summed, replica gradients are the single-device gradients,
    both w.r.t. the projections and w.r.t. the weights of a layer that makes them."""
    z_a, z_b = views
    strategy = two_replica_strategy
    kernel = np.random.default_rng(1).normal(size=(16, 6)).astype(np.float32)

    def loss_and_grads(a, b, weights, scale):
        with tf.GradientTape() as tape:
            tape.watch([a, b])
            out = nt_xent_loss(tf.matmul(a, weights), tf.matmul(b, weights), TEMPERATURE)
            loss = out.loss * scale
        return tape.gradient(loss, [a, b, weights])

    single_weights = tf.Variable(kernel)
    grad_a, grad_b, grad_w = loss_and_grads(tf.constant(z_a), tf.constant(z_b), single_weights, 1.0)

    with strategy.scope():
        mirrored_weights = tf.Variable(kernel)

    @tf.function
    def replica_step(a, b):
        return loss_and_grads(a, b, mirrored_weights, 1.0 / strategy.num_replicas_in_sync)

    grads = strategy.run(replica_step, args=_split_over_replicas(strategy, z_a, z_b))
    dist_a = np.concatenate([g.numpy() for g in strategy.experimental_local_results(grads[0])])
    dist_b = np.concatenate([g.numpy() for g in strategy.experimental_local_results(grads[1])])
    dist_w = strategy.reduce(tf.distribute.ReduceOp.SUM, grads[2], axis=None)
    assert np.abs(grad_w.numpy()).max() > 1e-4  # a real gradient to compare
    np.testing.assert_allclose(dist_a, grad_a.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dist_b, grad_b.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dist_w.numpy(), grad_w.numpy(), rtol=1e-4, atol=1e-6)


def test_contrastive_accuracy_of_aligned_views_is_one():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(16, 64)).astype(np.float32)
    out = nt_xent_loss(z, 2.0 * z, TEMPERATURE)
    assert float(contrastive_accuracy(out.logits, out.labels)) == 1.0


def test_contrastive_accuracy_and_entropy_match_numpy(views):
    z_a, _ = views
    z_b = np.random.default_rng(3).normal(size=z_a.shape).astype(np.float32)  # unrelated views
    out = nt_xent_loss(z_a, z_b, 1.0)
    logits = numpy_direction_a_logits(z_a, z_b, 1.0)
    expected_accuracy = np.mean(np.argmax(logits, axis=1) == np.arange(len(z_a)))
    assert float(contrastive_accuracy(out.logits, out.labels)) == pytest.approx(expected_accuracy)
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    terms = np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1.0)), 0.0)
    expected_entropy = -terms.sum(axis=1).mean()
    np.testing.assert_allclose(float(logits_entropy(out.logits)), expected_entropy, rtol=1e-5)


def test_entropy_of_uniform_logits_is_log_of_candidates():
    assert float(logits_entropy(tf.zeros((3, 10)))) == pytest.approx(math.log(10), rel=1e-6)


def test_half_precision_inputs_give_a_finite_float32_loss(views):
    z_a, z_b = views
    out = nt_xent_loss(tf.cast(z_a, tf.float16), tf.cast(z_b, tf.float16), TEMPERATURE)
    assert out.loss.dtype == tf.float32
    expected, _ = numpy_nt_xent(z_a, z_b, TEMPERATURE)
    np.testing.assert_allclose(float(out.loss), expected, rtol=1e-2)
    assert np.isfinite(float(logits_entropy(out.logits)))


@pytest.mark.parametrize("temperature", [0.0, -0.1, float("nan"), float("inf"), "warm"])
def test_impossible_temperature_is_refused(views, temperature):
    z_a, z_b = views
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(z_a, z_b, temperature)


def test_mismatched_or_wrong_rank_views_are_refused(views):
    z_a, z_b = views
    with pytest.raises(ValueError, match="same shape"):
        nt_xent_loss(z_a, z_b[:, :8])
    with pytest.raises(ValueError, match=r"\(batch, dim\)"):
        nt_xent_loss(z_a[None], z_b[None])
