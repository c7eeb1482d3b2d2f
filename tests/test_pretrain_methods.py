"""Every self-supervised method in the one pretraining loop: two replicas equal one device,
EMA targets and MoCo's queue behave and survive checkpoints, MICLe pairs work, the method is
recorded in the run and the exported module."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from medfound.pretrain import PretrainConfig, pretrain
from medfound.pretrain.model import build_networks, build_optimizer
from medfound.pretrain.trainer import make_train_step
from medfound.runinfo import RunInfo
from medfound.pretrain.config import METHOD_OPTION_FIELDS
from medfound.ssl.ema import ema_momentum
from medfound.ssl.settings import MethodOptions

BATCH = 8


def _config(out, method: str, **overrides) -> PretrainConfig:
    options = dict(projection_dim=16, projection_hidden_dim=32, moco_queue_size=48)
    options.update({k: overrides.pop(k) for k in list(overrides) if k in METHOD_OPTION_FIELDS})
    base = dict(data="unused", out_dir=str(out), arch="tiny", image_size=32, batch_size=BATCH,
                steps=4, method=method, method_options=MethodOptions(**options), optimizer="sgd",
                learning_rate=0.05, warmup_fraction=0.0, log_every=1, checkpoint_every=1,
                preview_images=0, seed=5)
    base.update(overrides)
    return PretrainConfig(**base)


def _state(nets) -> list[np.ndarray]:
    """Every variable a step changes: backbone, method networks (targets included) and queue."""
    variables = list(nets.backbone.weights)
    for item in nets.method.checkpoint_items().values():
        variables += list(getattr(item, "weights", None) or item.variables)
    return [np.array(v.numpy() if hasattr(v, "numpy") else v) for v in variables]


def _two_steps(config, strategy, batches):
    """Builds the networks under ``strategy`` with the config's seed and runs two steps."""
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        nets, _ = build_networks(config)
        optimizer = build_optimizer(config)
        optimizer.build(nets.trainable_variables)
    initial = _state(nets)
    step = make_train_step(strategy, nets, optimizer, config)
    metrics = [step(batch) for batch in batches(strategy)]
    return nets, initial, metrics


@pytest.mark.slow
@pytest.mark.parametrize("method", ["barlow", "moco"])
def test_two_replicas_equal_one_device(method, two_replica_strategy, tmp_path):
    """Two steps split over two replicas equal one device: Barlow's correlation over the global
    batch and MoCo's gathered keys, EMA and queue (cross-replica updates) are exercised; the
    losses of every method are checked over replicas in test_ssl_objectives.py."""
    rng = np.random.default_rng(0)
    data = [{k: rng.uniform(size=(BATCH, 32, 32, 3)).astype(np.float32)
             for k in ("view_a", "view_b")} for _ in range(2)]

    def batches(strategy):
        if strategy.num_replicas_in_sync == 1:
            return [{k: tf.constant(v) for k, v in b.items()} for b in data]
        half = BATCH // 2
        return [strategy.experimental_distribute_values_from_function(
            lambda ctx, b=b: {k: tf.constant(v[half * ctx.replica_id_in_sync_group:][:half])
                              for k, v in b.items()}) for b in data]

    config = _config(tmp_path, method)
    single, single_initial, single_metrics = _two_steps(config, tf.distribute.get_strategy(),
                                                        batches)
    mirrored, mirrored_initial, mirrored_metrics = _two_steps(config, two_replica_strategy,
                                                              batches)
    for a, b in zip(single_initial, mirrored_initial):
        np.testing.assert_array_equal(a, b)  # same seed, same start
    for s, m in zip(single_metrics, mirrored_metrics):
        assert np.isfinite(float(s["loss"]))
        np.testing.assert_allclose(float(m["loss"]), float(s["loss"]), rtol=1e-4, atol=1e-5)
    after_single, after_mirrored = _state(single), _state(mirrored)
    assert len(after_single) == len(after_mirrored)
    assert any(np.abs(a - b).max() > 1e-6 for a, b in zip(single_initial, after_single))
    for a, b in zip(after_single, after_mirrored):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)


def test_target_network_is_the_ema_of_the_online_network(tmp_path):
    """After one step from identical copies, target = m(1) * start + (1 - m(1)) * online
    (BYOL here; MoCo shares the code and its EMA runs in the two-replica test)."""
    config = _config(tmp_path, "byol", ema_momentum=0.6, steps=10)
    keras.utils.set_random_seed(config.seed)
    nets, _ = build_networks(config)
    optimizer = build_optimizer(config)
    start = [w.numpy() for w in nets.backbone.weights]
    target = nets.method.target_backbone
    for a, b in zip(start, target.get_weights()):
        np.testing.assert_array_equal(a, b)
    views = tf.random.stateless_uniform((BATCH, 32, 32, 3), seed=[1, 2])
    make_train_step(tf.distribute.get_strategy(), nets, optimizer, config)(
        {"view_a": views, "view_b": tf.image.flip_left_right(views)})
    m = ema_momentum(1, 10, 0.6)
    assert 0.6 < m < 1
    moved = 0
    for s, online, t in zip(start, nets.backbone.get_weights(), target.get_weights()):
        np.testing.assert_allclose(t, m * s + (1 - m) * online, rtol=1e-5, atol=1e-6)
        moved += int(np.abs(online - s).max() > 0)
    assert moved > 0


def _checkpoint_queue(run_dir, step: int) -> tuple[np.ndarray, int]:
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints" / f"ckpt-{step}"))
    return (reader.get_tensor("queue/keys/.ATTRIBUTES/VARIABLE_VALUE"),
            int(reader.get_tensor("queue/pointer/.ATTRIBUTES/VARIABLE_VALUE")))


@pytest.fixture(scope="module")
def patients_csv(shared_data, tmp_path_factory) -> str:
    """A CSV of 24 real chest X-rays (PneumoniaMNIST, 28 px PNGs), 3 per patient: MICLe pairs
    that decode fast."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("micle")
    images = np.load(shared_data / "pneumoniamnist.npz")["train_images"][:24]
    rows = ["path,patient"]
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
        rows.append(f"{i}.png,p{i // 3}")
    (folder / "images.csv").write_text("\n".join(rows) + "\n")
    return str(folder / "images.csv")


def test_moco_queue_survives_a_resume_with_micle_pairs(patients_csv, tmp_path):
    run = tmp_path / "run"
    config = dict(data=patients_csv, micle=True)
    pretrain(_config(run, "moco", steps=2, **config), verbose=False)
    resumed = pretrain(_config(run, "moco", steps=3, **config), verbose=False)
    assert resumed.resumed_from == 2
    queue_2, pointer_2 = _checkpoint_queue(run, 2)
    queue_3, pointer_3 = _checkpoint_queue(run, 3)
    per_step = 2 * BATCH  # both views' keys
    assert (pointer_2, pointer_3) == (2 * per_step, 3 * per_step % 48)
    written = np.arange(2 * per_step, 3 * per_step) % 48
    kept = np.setdiff1d(np.arange(48), written)
    np.testing.assert_array_equal(queue_3[kept], queue_2[kept])  # restored, not re-initialised
    assert np.abs(queue_3[written] - queue_2[written]).max() > 1e-3
    np.testing.assert_allclose(np.linalg.norm(queue_3, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("method", ["byol", "relic"])
def test_micle_pairs_train_every_method(method, patients_csv, tmp_path):
    """With the MoCo and Barlow tests here and SimCLR's in test_pretrain.py, every method."""
    result = pretrain(_config(tmp_path / "run", method, micle=True, steps=1, data=patients_csv),
                      verbose=False)
    assert result.steps == 1 and np.isfinite(result.history[-1]["loss"])
    assert RunInfo.load(result.run_dir).method == method


def test_exported_module_records_the_method(patients_csv, tmp_path):
    from medfound.export.exporter import export_module
    from medfound.formats.metadata import read_metadata

    result = pretrain(_config(tmp_path / "run", "barlow", steps=1, micle=True, data=patients_csv),
                      verbose=False)
    assert np.isfinite(result.history[-1]["loss"])
    module = export_module(result.run_dir, tmp_path / "module", name="cxr-tiny-barlow",
                           allow_test_arch=True)
    assert read_metadata(module).method == "barlow"
    # `medfound label-efficiency` tells methods apart by this record.
    from medfound.finetune.label_efficiency import pretraining_of

    assert pretraining_of(str(module)) == "barlow (random)"
    assert pretraining_of(str(tmp_path / "missing")).startswith("unknown (")


def test_method_settings_are_validated(tmp_path):
    with pytest.raises(ValueError) as err:
        _config(tmp_path, "swav").validate()
    assert "method must be one of" in str(err.value)
    with pytest.raises(ValueError, match="moco_queue_size"):
        _config(tmp_path, "moco", moco_queue_size=8).validate()
    with pytest.raises(ValueError, match="ema_momentum"):
        _config(tmp_path, "byol", ema_momentum=1.5).validate()


def test_a_moco_queue_as_large_as_the_data_is_warned_about(tmp_path, caplog):
    from medfound.pretrain.trainer import _warn_about_queue

    config = _config(tmp_path, "moco", moco_queue_size=1024)
    with caplog.at_level("WARNING", logger="medfound.pretrain"):
        _warn_about_queue(config, 100_000)  # a small part of the data: fine
        assert not caplog.records
        _warn_about_queue(config, 2000)
    (record,) = caplog.records
    assert "1024" in record.getMessage() and "2000 training images" in record.getMessage()
    assert "--moco-queue-size 500" in record.getMessage()
    caplog.clear()
    _warn_about_queue(_config(tmp_path, "simclr", moco_queue_size=1024), 2000)  # not MoCo
    assert not caplog.records
