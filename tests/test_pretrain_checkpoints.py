"""Pretraining checkpoints hold every network of every method (heads, batch-norm statistics, EMA
targets, MoCo's queue), old head-less checkpoints still resume, and a killed run's half-written
leftovers are removed on restart."""
from __future__ import annotations

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from medfound.pretrain import PretrainConfig
from medfound.pretrain import runfolder
from medfound.pretrain.checkpoints import make_checkpoint, remove_leftovers, restore
from medfound.pretrain.model import build_networks, build_optimizer
from medfound.registry import SSL_METHODS
from medfound.ssl.settings import MethodOptions


def _networks(method: str, seed: int):
    config = PretrainConfig(data="unused", out_dir="unused", arch="tiny", image_size=32,
                            batch_size=4, steps=3, method=method,
                            method_options=MethodOptions(projection_dim=8, projection_hidden_dim=16,
                                                         moco_queue_size=8), optimizer="lars",
                            seed=seed)
    keras.utils.set_random_seed(seed)
    nets, _ = build_networks(config)
    optimizer = build_optimizer(config)
    optimizer.build(nets.trainable_variables)
    return nets, optimizer


def _variables(nets) -> dict[str, tf.Variable]:
    """Every variable of every network, by a name unique within the run."""
    found = {}
    for key, item in nets.checkpoint_items().items():
        for variable in item.variables:
            found[f"{key}/{variable.path if hasattr(variable, 'path') else variable.name}"] = variable
    return found


@pytest.mark.parametrize("method", sorted(SSL_METHODS))
def test_every_variable_of_every_network_round_trips(method, tmp_path):
    nets, optimizer = _networks(method, seed=1)
    saved = _variables(nets)
    rng = np.random.default_rng(0)
    for variable in saved.values():  # values no initialiser would give, batch-norm stats included
        variable.assign(rng.normal(size=tuple(variable.shape)).astype(
            keras.backend.standardize_dtype(variable.dtype)))
    optimizer.iterations.assign(7)
    path = make_checkpoint(optimizer, nets.checkpoint_items()).save(str(tmp_path / "ckpt"))

    fresh, fresh_optimizer = _networks(method, seed=2)
    restore(make_checkpoint(fresh_optimizer, fresh.checkpoint_items()), path,
            fresh.checkpoint_items())
    restored = _variables(fresh)
    assert restored.keys() == saved.keys()
    heads = [name for name in saved if not name.startswith("backbone/")]
    assert heads, "a method without networks of its own"
    for name, variable in saved.items():
        np.testing.assert_array_equal(restored[name].numpy(), variable.numpy(), err_msg=name)
    assert int(fresh_optimizer.iterations.numpy()) == 7


def test_a_checkpoint_without_heads_resumes_with_a_warning(tmp_path, caplog):
    nets, optimizer = _networks("simclr", seed=1)
    # What medfound 0.1.0 wrote before heads were saved: backbone and optimizer only.
    path = tf.train.Checkpoint(optimizer=optimizer, backbone=nets.backbone).save(
        str(tmp_path / "old"))
    fresh, fresh_optimizer = _networks("simclr", seed=2)
    with caplog.at_level(logging.WARNING, logger="medfound.pretrain"):
        restore(make_checkpoint(fresh_optimizer, fresh.checkpoint_items()), path,
                fresh.checkpoint_items())
    assert "restart from initialisation" in caplog.text and "head" in caplog.text
    for a, b in zip(fresh.method.projection.trainable_weights,
                    nets.method.projection.trainable_weights):  # through the optimizer
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(fresh.backbone.weights, nets.backbone.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_checkpoint_of_other_networks_is_refused(tmp_path):
    nets, optimizer = _networks("simclr", seed=1)
    path = make_checkpoint(optimizer, nets.checkpoint_items()).save(str(tmp_path / "ckpt"))
    byol, byol_optimizer = _networks("byol", seed=1)
    with pytest.raises(ValueError, match="does not match this run's networks") as error:
        restore(make_checkpoint(byol_optimizer, byol.checkpoint_items()), path,
                byol.checkpoint_items())
    assert str(tmp_path / "ckpt") in str(error.value)


def test_leftovers_of_a_killed_run_are_removed_and_finished_files_kept(tmp_path):
    run = tmp_path / "run"
    runfolder.claim(run)
    (run / "checkpoints" / "ckpt-3_temp").mkdir(parents=True)
    (run / "checkpoints" / "ckpt-3_temp" / "part").write_bytes(b"half")
    (run / "checkpoints" / "ckpt-2.index").write_bytes(b"whole")
    (run / "checkpoints" / "my_temp").mkdir()  # a user's: not a name TensorFlow writes
    (run / ".tmp-1234abcd-backbone.weights.h5").write_bytes(b"half")
    (run / ".tmp-draft.txt").write_bytes(b"a user's")
    (run / "backbone.weights.h5").write_bytes(b"whole")
    removed = remove_leftovers(run)
    assert sorted(p.name for p in removed) == [".tmp-1234abcd-backbone.weights.h5", "ckpt-3_temp"]
    assert sorted(p.name for p in run.rglob("*")) == [runfolder.MARKER_FILE, ".tmp-draft.txt",
                                                       "backbone.weights.h5", "checkpoints",
                                                       "ckpt-2.index", "my_temp"]


def test_nothing_is_removed_from_a_folder_pretraining_does_not_own(tmp_path):
    (tmp_path / "checkpoints" / "ckpt-3_temp").mkdir(parents=True)
    (tmp_path / ".tmp-1234abcd-backbone.weights.h5").write_bytes(b"someone's")
    assert remove_leftovers(tmp_path) == []
    assert (tmp_path / ".tmp-1234abcd-backbone.weights.h5").exists()
