"""Barlow Twins, BYOL, MoCo v2 and RELIC losses against independent NumPy versions, and every
loss and method split over two replicas against one device."""
from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from medfound.ssl import barlow_twins_loss, byol_loss, moco_loss, relic_loss
from medfound.ssl.ema import ema_momentum, ema_update
from tests.test_ssl_losses import _split_over_replicas, numpy_nt_xent

T = 0.2


def numpy_barlow(z_a: np.ndarray, z_b: np.ndarray, lam: float, eps: float = 1e-5) -> float:
    """The Barlow Twins paper's loss with explicit loops over the correlation entries."""
    n, d = z_a.shape
    a = (z_a - z_a.mean(0)) / np.sqrt(z_a.var(0) + eps)
    b = (z_b - z_b.mean(0)) / np.sqrt(z_b.var(0) + eps)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[k, i] * b[k, j] for k in range(n)) / n
            loss += (1 - c) ** 2 if i == j else lam * c ** 2
    return loss


def numpy_byol(p_a, p_b, t_a, t_b) -> float:
    def regression(p, t):
        return np.mean([2 - 2 * (p[i] @ t[i]) / (np.linalg.norm(p[i]) * np.linalg.norm(t[i]))
                        for i in range(len(p))])
    return 0.5 * (regression(p_a, t_b) + regression(p_b, t_a))


def numpy_moco(q: np.ndarray, k: np.ndarray, queue: np.ndarray, temperature: float) -> float:
    losses = []
    for i in range(len(q)):
        qi = q[i] / np.linalg.norm(q[i])
        ki = k[i] / np.linalg.norm(k[i])
        scores = [qi @ ki] + [qi @ negative for negative in queue]
        scores = np.array(scores) / temperature
        losses.append(-(scores[0] - math.log(np.exp(scores).sum())))
    return float(np.mean(losses))


def numpy_relic(z_a, z_b, temperature: float, alpha: float) -> float:
    a = z_a / np.linalg.norm(z_a, axis=1, keepdims=True)
    b = z_b / np.linalg.norm(z_b, axis=1, keepdims=True)
    kl = 0.0
    for i in range(len(a)):
        p = np.exp(a[i] @ b.T / temperature)
        p /= p.sum()
        q = np.exp(b[i] @ a.T / temperature)
        q /= q.sum()
        kl += float(np.sum(p * np.log(p / q)))
    contrastive, _ = numpy_nt_xent(z_a, z_b, temperature)
    return contrastive + alpha * kl / len(a)


@pytest.fixture(scope="module")
def views():
    rng = np.random.default_rng(7)
    base = rng.normal(size=(8, 6))
    z_a = (2.0 * (base + 0.4 * rng.normal(size=base.shape))).astype(np.float32)
    z_b = (0.7 * (base + 0.4 * rng.normal(size=base.shape)) + 0.3).astype(np.float32)
    return z_a, z_b


@pytest.fixture(scope="module")
def queue():
    q = np.random.default_rng(8).normal(size=(5, 6))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def test_barlow_matches_numpy_and_is_zero_for_decorrelated_identical_views(views):
    z_a, z_b = views
    out = barlow_twins_loss(z_a, z_b, lambda_offdiag=0.3)
    np.testing.assert_allclose(float(out.loss), numpy_barlow(z_a, z_b, 0.3), rtol=1e-4)
    np.testing.assert_allclose(float(out.loss),
                               float(out.on_diagonal) + 0.3 * float(out.off_diagonal), rtol=1e-6)
    # Orthogonal columns spanned by centred ones are centred and uncorrelated: c = I, loss 0.
    centred = np.random.default_rng(0).normal(size=(16, 4))
    white = np.linalg.qr(centred - centred.mean(0))[0] * 4
    assert float(barlow_twins_loss(white, white * 3 + 1, 0.3).loss) < 1e-3


def test_byol_matches_numpy_and_ignores_target_gradients(views):
    z_a, z_b = views
    p_a, p_b = tf.constant(z_a), tf.constant(z_b)
    t_a, t_b = tf.constant(z_a[::-1].copy()), tf.constant(z_b + 1.0)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([p_a, t_a])
        loss = byol_loss(p_a, p_b, t_a, t_b).loss
    np.testing.assert_allclose(float(loss), numpy_byol(z_a, z_b, z_a[::-1], z_b + 1.0), rtol=1e-5)
    assert tape.gradient(loss, t_a) is None and tape.gradient(loss, p_a) is not None
    assert float(byol_loss(z_a, z_b, z_a, z_b).loss) > 0.0
    assert float(byol_loss(z_a, z_a, z_a, z_a).loss) == pytest.approx(0.0, abs=1e-6)


def test_moco_matches_numpy(views, queue):
    z_a, z_b = views
    out = moco_loss(z_a, z_b, queue, temperature=T)
    np.testing.assert_allclose(float(out.loss), numpy_moco(z_a, z_b, queue, T), rtol=1e-5)
    assert out.logits.shape == (8, 6) and not np.any(out.labels.numpy())
    with pytest.raises(ValueError, match="queue must be"):
        moco_loss(z_a, z_b, queue[:, :3], temperature=T)


def test_relic_matches_numpy_and_adds_to_nt_xent(views):
    z_a, z_b = views
    out = relic_loss(z_a, z_b, temperature=T, alpha=0.7)
    np.testing.assert_allclose(float(out.loss), numpy_relic(z_a, z_b, T, 0.7), rtol=1e-5)
    assert float(out.invariance) > 0
    no_reg = relic_loss(z_a, z_b, temperature=T, alpha=0.0)
    np.testing.assert_allclose(float(no_reg.loss), numpy_nt_xent(z_a, z_b, T)[0], rtol=1e-5)


@pytest.mark.parametrize("bad", [dict(lambda_offdiag=-1.0), dict(alpha=-0.5)])
def test_negative_weights_are_refused(views, bad):
    fn = barlow_twins_loss if "lambda_offdiag" in bad else relic_loss
    with pytest.raises(ValueError, match="must be >= 0"):
        fn(*views, **bad)


LOSSES = {
    "barlow": lambda a, b, queue: barlow_twins_loss(a, b, 0.3).loss,
    "relic": lambda a, b, queue: relic_loss(a, b, T, 0.7).loss,
    "moco": lambda a, b, queue: moco_loss(a, b, queue, T).loss,
    "byol": lambda a, b, queue: byol_loss(a, b, b + 1.0, a * 2.0).loss,
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_two_replicas_give_the_single_device_loss_and_gradients(name, views, queue,
                                                                two_replica_strategy):
    """Each replica's loss / replicas, with gradients summed (as the trainer does), equals one
    device on the whole batch, for the losses that gather the batch and those that do not."""
    z_a, z_b = views
    strategy = two_replica_strategy
    kernel = np.random.default_rng(3).normal(size=(6, 6)).astype(np.float32)
    fn = LOSSES[name]

    def loss_and_grads(a, b, weights, scale):
        with tf.GradientTape() as tape:
            loss = fn(tf.matmul(a, weights), tf.matmul(b, weights), tf.constant(queue))
            scaled = loss * scale
        return loss, tape.gradient(scaled, weights)

    single_loss, single_grad = loss_and_grads(tf.constant(z_a), tf.constant(z_b),
                                              tf.Variable(kernel), 1.0)
    with strategy.scope():
        mirrored = tf.Variable(kernel)
    losses, grads = strategy.run(
        tf.function(lambda a, b: loss_and_grads(a, b, mirrored, 0.5)),
        args=_split_over_replicas(strategy, z_a, z_b))
    replica_losses = [float(x) for x in strategy.experimental_local_results(losses)]
    np.testing.assert_allclose(np.mean(replica_losses), float(single_loss), rtol=1e-5)
    summed = strategy.reduce(tf.distribute.ReduceOp.SUM, grads, axis=None).numpy()
    assert np.abs(single_grad.numpy()).max() > 1e-4
    np.testing.assert_allclose(summed, single_grad.numpy(), rtol=1e-4, atol=1e-6)


def test_ema_schedule_and_update():
    assert ema_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert ema_momentum(100, 100, 0.99) == pytest.approx(1.0)
    values = [ema_momentum(k, 100, 0.9) for k in range(0, 101, 10)]
    assert all(x < y for x, y in zip(values, values[1:]))
    assert float(ema_momentum(tf.constant(37), 100, 0.9)) == pytest.approx(
        ema_momentum(37, 100, 0.9), abs=1e-6)
    target, online = tf.Variable([1.0, 2.0]), tf.Variable([3.0, -2.0])
    ema_update([(target, online)], 0.75)
    np.testing.assert_allclose(target.numpy(), [0.75 * 1 + 0.25 * 3, 0.75 * 2 + 0.25 * -2])
    with pytest.raises(ValueError, match="momentum"):
        ema_momentum(0, 10, 1.5)
