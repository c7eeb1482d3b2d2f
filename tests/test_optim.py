"""LARS against a NumPy reference (plain, Nesterov, exclusions, two replicas); the schedules."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from medfound.models.bit import build_backbone
from medfound.optim import LARS, WarmupCosineDecay, scale_learning_rate
from medfound.ssl import ProjectionHead


def numpy_lars(weights, grads_per_step, lr, momentum, weight_decay, eta, nesterov, excluded):
    """Reference LARS (SimCLR TF2 semantics) on a dict of float64 arrays; returns new weights."""
    weights = {k: np.array(v, np.float64) for k, v in weights.items()}
    velocity = {k: np.zeros_like(v) for k, v in weights.items()}
    for grads in grads_per_step:
        for name, w in weights.items():
            g = np.array(grads[name], np.float64)
            if name not in excluded:
                g = g + weight_decay * w
            trust = 1.0
            if name not in excluded:
                w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
                if w_norm > 0 and g_norm > 0:
                    trust = eta * w_norm / g_norm
            velocity[name] = momentum * velocity[name] + lr * trust * g
            step = momentum * velocity[name] + lr * trust * g if nesterov else velocity[name]
            weights[name] = w - step
    return weights


@pytest.fixture()
def dense():
    """A Dense layer whose variables' paths are 'fc/kernel' and 'fc/bias'."""
    layer = keras.layers.Dense(3, name="fc")
    layer.build((None, 4))
    rng = np.random.default_rng(0)
    layer.set_weights([rng.normal(size=(4, 3)).astype(np.float32),
                       rng.normal(size=(3,)).astype(np.float32)])
    return layer


def _gradients(seed: int, steps: int = 3) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"kernel": rng.normal(size=(4, 3)).astype(np.float32),
             "bias": rng.normal(size=(3,)).astype(np.float32)} for _ in range(steps)]


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("exclude", [None, []], ids=["default_exclusions", "no_exclusions"])
def test_lars_matches_numpy_for_three_steps(dense, nesterov, exclude):
    hyper = dict(momentum=0.9, weight_decay=0.1, eta=0.01)
    optimizer = LARS(learning_rate=0.5, nesterov=nesterov, exclude_from_weight_decay=exclude,
                     **hyper)
    start = {"kernel": dense.kernel.numpy(), "bias": dense.bias.numpy()}
    grads = _gradients(1)
    for step in grads:
        optimizer.apply([tf.constant(step["kernel"]), tf.constant(step["bias"])],
                        [dense.kernel, dense.bias])
    excluded = {"bias"} if exclude is None else set()
    expected = numpy_lars(start, grads, lr=0.5, nesterov=nesterov, excluded=excluded, **hyper)
    np.testing.assert_allclose(dense.kernel.numpy(), expected["kernel"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dense.bias.numpy(), expected["bias"], rtol=1e-5, atol=1e-6)
    # The two settings really differ for the bias (so the comparison checks the exclusion).
    other = numpy_lars(start, grads, lr=0.5, nesterov=nesterov,
                       excluded=set() if excluded else {"bias"}, **hyper)
    assert np.abs(other["bias"] - expected["bias"]).max() > 1e-3


def test_separate_adaptation_and_weight_decay_lists(dense):
    """Excluded from adaptation only: weight decay still applies, the trust ratio is 1."""
    optimizer = LARS(learning_rate=0.1, momentum=0.0, weight_decay=0.5, eta=0.01,
                     exclude_from_adaptation=["kernel"], exclude_from_weight_decay=[])
    w = dense.kernel.numpy().astype(np.float64)
    g = np.ones((4, 3), np.float32)
    optimizer.apply([tf.constant(g), tf.zeros((3,))], [dense.kernel, dense.bias])
    np.testing.assert_allclose(dense.kernel.numpy(), w - 0.1 * (g + 0.5 * w), rtol=1e-5, atol=1e-6)
    assert optimizer.uses_weight_decay(dense.kernel) and not optimizer.uses_adaptation(dense.kernel)
    assert optimizer.uses_adaptation(dense.bias)


def test_zero_gradient_and_zero_weight_use_trust_ratio_one():
    variable = keras.Variable(np.zeros((2, 2), np.float32), name="kernel")
    optimizer = LARS(learning_rate=0.3, momentum=0.0, weight_decay=0.0, eta=0.001)
    optimizer.apply([tf.fill((2, 2), 2.0)], [variable])
    # ||w|| == 0, so the trust ratio is 1, not eta * 0 / ||g||.
    np.testing.assert_allclose(variable.numpy(), np.full((2, 2), -0.6), rtol=1e-6)


def test_default_exclusions_on_backbone_and_head():
    """GroupNorm/BatchNorm parameters and biases are excluded; conv and dense kernels are not."""
    backbone = build_backbone("tiny", image_size=32)
    head = ProjectionHead(output_dim=8)
    head.build((None, 16))
    classifier = keras.layers.Dense(2, name="classifier")
    classifier.build((None, 8))
    variables = (backbone.trainable_variables + head.trainable_variables
                 + classifier.trainable_variables)
    optimizer = LARS(learning_rate=0.1)
    optimizer.build(variables)
    for variable in variables:
        is_kernel = variable.path.endswith("kernel")
        assert optimizer.uses_weight_decay(variable) == is_kernel, variable.path
        assert optimizer.uses_adaptation(variable) == is_kernel, variable.path
    assert sum("group_norm" in v.path for v in variables) > 0
    assert sum("batch_normalization" in v.path for v in variables) > 0


def test_no_weight_decay_from_the_keras_base_class():
    optimizer = LARS(learning_rate=0.1, weight_decay=0.01)
    assert optimizer.weight_decay is None and optimizer.lars_weight_decay == 0.01


def test_lars_one_step_under_mirrored_strategy(two_replica_strategy):
    """Per-replica gradients are summed by Keras, then the LARS rule is applied once."""
    strategy = two_replica_strategy
    rng = np.random.default_rng(3)
    kernel0 = rng.normal(size=(4, 3)).astype(np.float32)
    bias0 = rng.normal(size=(3,)).astype(np.float32)
    replica_grads = [_gradients(10 + r, steps=1)[0] for r in range(2)]
    with strategy.scope():
        layer = keras.layers.Dense(3, name="fc")
        layer.build((None, 4))
        layer.set_weights([kernel0, bias0])
        optimizer = LARS(learning_rate=0.2, momentum=0.9, weight_decay=0.05, eta=0.02)
        optimizer.build(layer.trainable_variables)

    values = strategy.experimental_distribute_values_from_function(
        lambda ctx: (tf.constant(replica_grads[ctx.replica_id_in_sync_group]["kernel"]),
                     tf.constant(replica_grads[ctx.replica_id_in_sync_group]["bias"])))

    @tf.function
    def step(grad_kernel, grad_bias):
        optimizer.apply([grad_kernel, grad_bias], [layer.kernel, layer.bias])

    strategy.run(step, args=values)
    summed = {k: replica_grads[0][k] + replica_grads[1][k] for k in ("kernel", "bias")}
    expected = numpy_lars({"kernel": kernel0, "bias": bias0}, [summed], lr=0.2, momentum=0.9,
                          weight_decay=0.05, eta=0.02, nesterov=False, excluded={"bias"})
    for replica_kernel in strategy.experimental_local_results(layer.kernel.value):
        np.testing.assert_allclose(replica_kernel.numpy(), expected["kernel"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.bias.numpy(), expected["bias"], rtol=1e-5, atol=1e-6)


def test_lars_config_round_trip_with_schedule():
    schedule = WarmupCosineDecay(1.2, total_steps=100, warmup_steps=10)
    optimizer = LARS(learning_rate=schedule, momentum=0.8, weight_decay=1e-4, eta=0.002,
                     nesterov=True, exclude_from_weight_decay=["bias"])
    restored = LARS.from_config(optimizer.get_config())
    assert restored.momentum == 0.8 and restored.eta == 0.002 and restored.nesterov
    assert restored.lars_weight_decay == 1e-4 and restored.weight_decay is None
    assert restored.exclude_from_weight_decay == ("bias",)
    assert restored.exclude_from_adaptation == ("bias",)
    assert isinstance(restored._learning_rate, WarmupCosineDecay)
    assert float(restored._learning_rate(55)) == pytest.approx(float(schedule(55)))
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(clone, LARS) and clone.eta == 0.002


@pytest.mark.parametrize("kwargs", [dict(momentum=1.0), dict(momentum=-0.1), dict(eta=0.0),
                                    dict(weight_decay=-1e-6), dict(learning_rate=-0.1),
                                    dict(exclude_from_weight_decay="bias")])
def test_lars_refuses_impossible_configuration(kwargs):
    with pytest.raises(ValueError, match="LARS"):
        LARS(**kwargs)


def closed_form(step: int, base: float, total: int, warmup: int) -> float:
    if step < warmup:
        return base * step / warmup
    progress = min((step - warmup) / (total - warmup), 1.0)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def test_warmup_cosine_matches_closed_form():
    schedule = WarmupCosineDecay(2.0, total_steps=1000, warmup_steps=100)
    for step in [0, 1, 50, 99, 100, 101, 400, 550, 999, 1000, 1500]:
        expected = closed_form(step, 2.0, 1000, 100)
        assert float(schedule(step)) == pytest.approx(expected, abs=1e-6), step
    assert float(schedule(100)) == pytest.approx(2.0)
    assert float(schedule(1000)) == pytest.approx(0.0, abs=1e-7)
    graph = tf.function(lambda s: schedule(s))(tf.constant(300, tf.int64))
    assert float(graph) == pytest.approx(closed_form(300, 2.0, 1000, 100), rel=1e-6)


def test_cosine_without_warmup_and_serialization():
    schedule = WarmupCosineDecay(0.3, total_steps=50)
    assert float(schedule(0)) == pytest.approx(0.3)
    assert float(schedule(25)) == pytest.approx(closed_form(25, 0.3, 50, 0), abs=1e-7)
    schedules = keras.optimizers.schedules
    restored = schedules.deserialize(schedules.serialize(schedule))
    assert isinstance(restored, WarmupCosineDecay)
    assert restored.get_config() == schedule.get_config()


@pytest.mark.parametrize("kwargs", [dict(total_steps=0), dict(warmup_steps=-1),
                                    dict(total_steps=10, warmup_steps=11),
                                    dict(base_learning_rate=-1.0)])
def test_schedule_refuses_impossible_configuration(kwargs):
    args = dict(base_learning_rate=0.1, total_steps=100, warmup_steps=10) | kwargs
    with pytest.raises(ValueError, match="WarmupCosineDecay"):
        WarmupCosineDecay(**args)


def test_scale_learning_rate():
    assert scale_learning_rate(0.3, 4096, "linear") == pytest.approx(0.3 * 4096 / 256)
    assert scale_learning_rate(0.075, 4096, "sqrt") == pytest.approx(0.075 * 64)
    assert scale_learning_rate(0.1, 256) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="scaling"):
        scale_learning_rate(0.1, 256, "cubic")
    with pytest.raises(ValueError, match="batch_size"):
        scale_learning_rate(0.1, 0)


# ---- the one optimizer factory: every optimizer applies the weight decay it is given ----

def _dense_and_norm():
    """A Dense layer (kernel, bias) and a LayerNormalization (gamma, beta), built, with non-zero weights."""
    dense, norm = keras.layers.Dense(3), keras.layers.LayerNormalization()
    dense.build((None, 4))
    norm.build((None, 3))
    rng = np.random.default_rng(0)
    for v in dense.weights + norm.weights:
        v.assign(rng.normal(size=v.shape).astype("float32") + 1.0)
    return dense.kernel, [dense.bias, norm.gamma, norm.beta]


def _one_zero_gradient_step(optimizer):
    """One step with zero gradients: only weight decay can move the weights. Returns (before, after)."""
    kernel, spared = _dense_and_norm()
    variables = [kernel, *spared]
    before = [np.array(v.numpy()) for v in variables]
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in variables])
    return before, [np.array(v.numpy()) for v in variables]


def _pretrain_config(optimizer: str, weight_decay: float):
    from medfound.pretrain.config import PretrainConfig

    return PretrainConfig(data="unused", out_dir="unused", arch="tiny", optimizer=optimizer,
                          weight_decay=weight_decay, learning_rate=0.256, batch_size=256,
                          lr_scaling="linear", warmup_fraction=0.0, steps=10)


def test_pretraining_sgd_applies_weight_decay():
    """The bug: pretraining built SGD without its weight decay. Decoupled decay shrinks each
    decayed weight by exactly (1 - lr * wd) in a zero-gradient step; biases and norms are spared."""
    from medfound.pretrain.model import build_optimizer

    config = _pretrain_config("sgd", weight_decay=0.5)
    before, after = _one_zero_gradient_step(build_optimizer(config))
    lr = 0.256 * 256 / 256  # linear scaling at batch 256, no warm-up: the full rate at step 0
    np.testing.assert_allclose(after[0], before[0] * (1 - lr * 0.5), rtol=1e-6)
    for b, a in zip(before[1:], after[1:]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["lars", "sgd", "adamw"])
def test_pretraining_and_finetuning_decay_the_same_way(name):
    """One factory: pretraining's and fine-tuning's optimizers move the same weights the same way."""
    from medfound.finetune.config import FinetuneConfig
    from medfound.finetune.trainer import make_optimizer as finetune_optimizer
    from medfound.pretrain.model import build_optimizer

    pre_before, pre_after = _one_zero_gradient_step(build_optimizer(_pretrain_config(name, 0.5)))
    ft = FinetuneConfig(module="random:tiny", task="medmnist", data="unused", out_dir="unused", optimizer=name,
                        learning_rate=0.256, weight_decay=0.5, warmup_fraction=0.0)
    ft_before, ft_after = _one_zero_gradient_step(finetune_optimizer(ft, total_steps=10))
    np.testing.assert_allclose(pre_after[0], ft_after[0], rtol=1e-6)
    # the kernel decayed (LARS: by lr * eta = 2.6e-4 of its norm, SGD and AdamW: by lr * wd)
    assert np.linalg.norm(pre_after[0]) < (1 - 1e-4) * np.linalg.norm(pre_before[0])
    for b, a in zip(pre_before[1:] + ft_before[1:], pre_after[1:] + ft_after[1:]):
        np.testing.assert_array_equal(a, b)


def test_factory_without_weight_decay_leaves_weights_alone():
    from medfound.optim import make_optimizer

    before, after = _one_zero_gradient_step(make_optimizer("sgd", 0.1, 10, weight_decay=0.0))
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        make_optimizer("adam", 0.1, 10)
