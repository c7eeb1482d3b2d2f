"""Pretraining runs on real images: checkpoints, resume, validation, replicas and MICLe."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import tensorflow as tf

import medfound
from medfound.pretrain import PretrainConfig, pretrain
from medfound.runinfo import RunInfo
from medfound.ssl.settings import MethodOptions


def _config(shared_data, out, **overrides) -> PretrainConfig:
    base = dict(data=str(shared_data / "pneumoniamnist.npz"), out_dir=str(out), arch="tiny",
                image_size=32, batch_size=8, steps=4, log_every=1, checkpoint_every=2,
                keep_checkpoints=2, preview_images=2, seed=1)
    base.update(overrides)
    return PretrainConfig(**base)


def test_run_writes_checkpoints_logs_and_export_files(shared_data, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = pretrain(_config(shared_data, tmp_path / "run", steps=6, checkpoint_every=2),
                          verbose=False)
    # The final GroupNorm (read only by pre_logits) gets no gradient: left out of the update,
    # not reported by Keras as "Gradients do not exist" at every run.
    assert not [w for w in caught if "Gradients do not exist" in str(w.message)]
    assert result.steps == 6 and result.resumed_from == 0
    assert [h["step"] for h in result.history] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(h["loss"]) and h["images_per_second"] > 0 for h in result.history)
    assert result.history[-1]["learning_rate"] == pytest.approx(0.0, abs=1e-9)  # cosine end
    ckpts = tf.train.get_checkpoint_state(str(tmp_path / "run" / "checkpoints"))
    assert [p.rsplit("-", 1)[1] for p in ckpts.all_model_checkpoint_paths] == ["4", "6"]
    info = RunInfo.load(tmp_path / "run")
    assert (info.arch, info.steps, info.init, info.modality) == ("tiny", 6, "random", "cxr")
    assert "pneumoniamnist.npz" in info.data and info.image_size == 32
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["batch_size"] == 8
    assert list((tmp_path / "run" / "logs").iterdir())  # TensorBoard events
    reloaded = medfound.build_backbone("tiny")
    reloaded.load_weights(result.backbone_weights)
    for a, b in zip(reloaded.get_weights(), result.backbone.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.fixture
def op_determinism():
    """--deterministic switches TensorFlow's op determinism on for the whole process: switched
    off again afterwards, so that the other tests of this worker run as they would alone."""
    from tensorflow.python.framework import config as tf_config

    yield
    tf_config.disable_op_determinism()


def test_resume_continues_step_count_optimizer_and_schedule(shared_data, tmp_path,
                                                            op_determinism):
    # --deterministic: a run stopped after its step-4 checkpoint and resumed ends with exactly
    # the weights of the uninterrupted run. A restart from scratch would train steps 1-6 again
    # (history from 1); a resume that lost the weights or the optimizer state would differ.
    whole = pretrain(_config(shared_data, tmp_path / "whole", steps=6, deterministic=True),
                     verbose=False)
    pretrain(_config(shared_data, tmp_path / "run", steps=6, deterministic=True), verbose=False)
    for path in (tmp_path / "run" / "checkpoints").glob("ckpt-6.*"):
        path.unlink()  # as if killed right after the step-4 checkpoint
    resumed = pretrain(_config(shared_data, tmp_path / "run", steps=6, deterministic=True),
                       verbose=False)
    assert resumed.resumed_from == 4 and resumed.steps == 6
    assert [h["step"] for h in resumed.history] == [5, 6]
    for a, b in zip(whole.backbone.get_weights(), resumed.backbone.get_weights()):
        np.testing.assert_array_equal(a, b)
    grown = pretrain(_config(shared_data, tmp_path / "run", steps=8, deterministic=True),
                     verbose=False)  # steps may grow on resume
    assert grown.resumed_from == 6 and [h["step"] for h in grown.history] == [7, 8]
    again = pretrain(_config(shared_data, tmp_path / "run", steps=8, deterministic=True),
                     verbose=False)
    assert again.resumed_from == 8 and again.history == []


def test_resume_with_another_architecture_is_refused(shared_data, tmp_path):
    pretrain(_config(shared_data, tmp_path / "run", steps=2), verbose=False)
    with pytest.raises(ValueError, match="other settings.*arch: 'tiny' in the run, 'small' now"):
        pretrain(_config(shared_data, tmp_path / "run", arch="small"), verbose=False)


@pytest.mark.parametrize("overrides, message", [
    ({"method_options": MethodOptions(temperature=-0.1)}, "temperature must be > 0"),
    ({"preset": "mri"}, "unknown augmentation preset 'mri'"),
    ({"batch_size": 1}, "batch_size must be >= 2"),
    ({"strategy": "horovod"}, "strategy must be one of"),
    ({"init": "bit-m:/nowhere/BiT-M-R50x1.npz"}, "init checkpoint not found"),
    ({"init": "imagenet"}, "init checkpoint: module 'imagenet' not found"),
])
def test_impossible_configurations_are_refused_before_work(shared_data, tmp_path, overrides,
                                                           message):
    with pytest.raises(ValueError, match=message):
        pretrain(_config(shared_data, tmp_path / "run", **overrides), verbose=False)
    assert not (tmp_path / "run").exists()


def test_batch_must_split_over_replicas(shared_data, tmp_path, two_replica_strategy):
    with pytest.raises(ValueError, match="batch_size 9 must be a multiple of the 2 replicas"):
        pretrain(_config(shared_data, tmp_path / "run", batch_size=9),
                 strategy=two_replica_strategy, verbose=False)


def test_two_replicas_train(shared_data, tmp_path, two_replica_strategy):
    result = pretrain(_config(shared_data, tmp_path / "run", steps=2),
                      strategy=two_replica_strategy, verbose=False)
    assert result.steps == 2 and all(np.isfinite(h["loss"]) for h in result.history)
    # Global batch 8 over 2 replicas: each example meets 2*8-2 negatives, so a uniform
    # guess would have loss log(15); training from scratch starts near it.
    assert result.history[0]["loss"] == pytest.approx(np.log(15), rel=0.3)


def test_bit_initialisation_is_recorded(shared_data, tmp_path):
    from tests.bit_reference import bit_random_checkpoint

    npz = tmp_path / "BiT-M-tiny.npz"
    np.savez(npz, **bit_random_checkpoint((1, 1, 1, 1), 0.5))
    result = pretrain(_config(shared_data, tmp_path / "run", steps=1, init=f"bit-m:{npz}"),
                      verbose=False)
    info = RunInfo.load(result.run_dir)
    assert info.init == "bit-m" and info.init_path == str(npz)
    assert info.init_sha256 == medfound.utils.sha256_file(npz)


def test_init_starts_from_exactly_the_checkpoint_and_refuses_partial_starts(tmp_path):
    from medfound.models.bit import build_backbone
    from medfound.models.bit_weights import load_bit_weights
    from medfound.pretrain.model import build_networks, unmatched_layers
    from tests.bit_reference import bit_random_checkpoint

    npz = tmp_path / "BiT-M-tiny.npz"
    np.savez(npz, **bit_random_checkpoint((1, 1, 1, 1), 0.5, seed=3))
    config = PretrainConfig(data="-", out_dir=str(tmp_path / "run"), arch="tiny",
                            init=f"bit-m:{npz}")
    nets, record = build_networks(config)  # the weights the first step starts from
    reference = build_backbone("tiny")
    load_bit_weights(reference, npz)
    assert record.kind == "bit-m"
    for want, got in zip(reference.weights, nets.backbone.weights):
        assert want.path == got.path
        np.testing.assert_array_equal(want.numpy(), got.numpy(), err_msg=got.path)
    # Only the final GroupNorm (absent from REMEDIS modules) may be missing from a source.
    module_form = build_backbone("tiny", final_norm=False)
    assert unmatched_layers(nets.backbone, {l.name for l in module_form.layers}) == []
    names = {l.name for l in module_form.layers} - {"block2_unit01_a_standardized_conv2d"}
    assert unmatched_layers(nets.backbone, names) == ["block2_unit01_a_standardized_conv2d"]


def test_micle_pretraining_on_nih_patients(shared_data, tmp_path):
    result = pretrain(_config(shared_data, tmp_path / "run", steps=2, micle=True,
                              data=str(shared_data / "nih-cxr14-sample" / "images")),
                      verbose=False)
    assert result.steps == 2 and np.isfinite(result.history[-1]["loss"])


def test_pretrain_command_with_augment_overrides(shared_data, tmp_path, capsys):
    from medfound.cli.main import main

    out = tmp_path / "run"
    code = main(["pretrain", "--data", str(shared_data / "pneumoniamnist.npz"), "--out", str(out),
                 "--arch", "tiny", "--image-size", "32", "--batch-size", "8", "--steps", "1",
                 "--augment", "crop_area=0.4,1", "--augment", "elastic_prob=0", "--quiet"])
    assert code == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["augment"] == {"crop_area": [0.4, 1], "elastic_prob": 0}
    assert "steps: 1 (resumed from 0)" in capsys.readouterr().out
    capsys.readouterr()
    assert main(["pretrain", "--data", str(shared_data / "pneumoniamnist.npz"), "--out",
                 str(tmp_path / "bad"), "--augment", "crop_area=0,2"]) == 2
    assert "augmentation: " in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_xla_and_mixed_precision_steps_equal_the_float32_steps(shared_data, tmp_path):
    """The same two steps (same seed, batches and views) in float32, compiled with XLA, in mixed
    bfloat16 and in mixed float16. Step 1's loss checks the forward pass, step 2's the update in
    between, the weights after step 2 the whole update. XLA only reorders float32 sums: within
    1e-4. bfloat16 keeps 2-3 significant digits: step 1's loss within 1%, step 2's within 5%,
    and the weights' change points the same way (cosine > 0.6) at about the same size. float16's
    dynamic loss scale starts at 2**15 and skips the steps whose scaled gradients overflow (here
    both: its weights do not move), so only its step-1 loss is compared (within 1%)."""
    import keras

    def run(name, **overrides):
        return pretrain(_config(shared_data, tmp_path / name, steps=2, checkpoint_every=2, learning_rate=1.0,
                                warmup_fraction=0.0, **overrides), verbose=False)

    f32, xla = run("f32"), run("xla", xla=True)
    bf16, f16 = run("bf16", precision="mixed_bfloat16"), run("f16", precision="mixed_float16")
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the runs
    initial = _initial_weights(shared_data, tmp_path)
    reference = [h["loss"] for h in f32.history]

    def change(result) -> np.ndarray:
        return np.concatenate([(w - w0).ravel() for w, w0 in zip(result.backbone.get_weights(), initial)])

    moved = change(f32)
    assert np.linalg.norm(moved) > 0  # the steps changed the weights: there is an update to compare
    np.testing.assert_allclose([h["loss"] for h in xla.history], reference, rtol=1e-4)
    np.testing.assert_allclose(change(xla), moved, atol=1e-4 * np.abs(moved).max())
    bf16_moved = change(bf16)
    cosine = float(bf16_moved @ moved / (np.linalg.norm(bf16_moved) * np.linalg.norm(moved)))
    np.testing.assert_allclose(bf16.history[0]["loss"], reference[0], rtol=1e-2)
    np.testing.assert_allclose(bf16.history[1]["loss"], reference[1], rtol=5e-2)
    # Measured on CPU: cosine 0.81, norm ratio 0.94 (LARS rescales each layer's noisy bf16 gradient).
    assert cosine > 0.6 and 0.7 < np.linalg.norm(bf16_moved) / np.linalg.norm(moved) < 1.3
    np.testing.assert_allclose(f16.history[0]["loss"], reference[0], rtol=1e-2)


def _initial_weights(shared_data, tmp_path) -> list[np.ndarray]:
    """The backbone's weights before any step, as pretrain builds them for seed 1."""
    import keras

    from medfound.pretrain.model import build_networks

    keras.utils.set_random_seed(1)
    nets, _ = build_networks(_config(shared_data, tmp_path / "init"))
    return nets.backbone.get_weights()


def test_resumed_learning_rate_matches_an_uninterrupted_run(shared_data, tmp_path):
    straight = pretrain(_config(shared_data, tmp_path / "straight", steps=6, warmup_fraction=0.5),
                        verbose=False)
    pretrain(_config(shared_data, tmp_path / "split", steps=3, warmup_fraction=0.5),
             verbose=False)
    # Same total steps => same schedule; the resumed half must sit at the same positions.
    resumed = pretrain(_config(shared_data, tmp_path / "split", steps=6, warmup_fraction=0.5),
                       verbose=False)
    expected = {h["step"]: h["learning_rate"] for h in straight.history}
    for h in resumed.history:
        assert h["learning_rate"] == pytest.approx(expected[h["step"]], rel=1e-6)


# config.json as medfound wrote it before PretrainConfig nested the method's knobs (flat at the top),
# for _config(..., temperature=0.2): written by that code, not reconstructed.
OLD_FLAT_CONFIG = {
    "arch": "tiny", "augment": {}, "barlow_lambda": 0.0051, "batch_size": 8, "checkpoint_every": 2,
    "data": "DATA", "deterministic": False, "ema_momentum": None, "image_size": 32, "init": "random",
    "keep_checkpoints": 2, "learning_rate": 0.3, "log_every": 1, "lr_scaling": "linear", "method": "simclr",
    "micle": False, "micle_probability": 1.0, "moco_queue_size": 16384, "modality": "cxr", "momentum": 0.9,
    "optimizer": "lars", "out_dir": "OUT", "path_column": None, "patient_column": None, "precision": "float32",
    "preset": None, "preview_images": 2, "projection_dim": None, "projection_hidden_dim": None,
    "projection_layers": None, "relic_alpha": 1.0, "seed": 1, "skip_bad_images": False, "split": "train",
    "steps": 4, "strategy": "default", "temperature": 0.2, "units": None, "warmup_fraction": 0.05,
    "weight_decay": 1e-06, "width": None, "xla": False}


def test_a_run_saved_with_the_old_flat_config_loads_and_resumes(shared_data, tmp_path):
    run = tmp_path / "run"
    options = MethodOptions(temperature=0.2)
    config = _config(shared_data, run, steps=2, method_options=options)
    pretrain(config, verbose=False)
    (run / "config.json").write_text(json.dumps(dict(OLD_FLAT_CONFIG, data=config.data, out_dir=str(run),
                                                     steps=2), sort_keys=True))
    assert PretrainConfig.load(run / "config.json") == config
    resumed = pretrain(_config(shared_data, run, steps=4, method_options=options), verbose=False)
    assert (resumed.resumed_from, resumed.steps) == (2, 4)
    # The flat file's knobs still define the run: another temperature is refused, naming both.
    with pytest.raises(ValueError, match="temperature: 0.2 in the run, 0.5 now"):
        pretrain(_config(shared_data, run, steps=6, method_options=MethodOptions(temperature=0.5)),
                 verbose=False)
