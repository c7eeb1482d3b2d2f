"""Pretraining precision is a property of the run's networks, not of Keras' global policy."""
from __future__ import annotations

import keras
import numpy as np

from medfound.models.bit import build_backbone
from medfound.pretrain import PretrainConfig
from medfound.pretrain.model import build_networks


def test_mixed_precision_is_set_per_model(tmp_path):
    config = PretrainConfig(data=str(tmp_path), out_dir=str(tmp_path / "run"), arch="tiny",
                            image_size=32, batch_size=4, steps=1, precision="mixed_bfloat16")
    nets, _ = build_networks(config)
    nets.set_dtype_policy(config.precision)
    images = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    assert nets.backbone(images)["embedding"].dtype == "bfloat16"
    head = next(layer for layer in nets.method.trainable_layers)
    assert head.compute_dtype == "bfloat16"
    # Nothing global changed: a model built now (an evaluation beside the run) stays float32,
    # and the run's variables are float32 whatever the policy (checkpoints do not depend on it).
    assert keras.mixed_precision.global_policy().name == "float32"
    assert build_backbone("tiny")(images)["embedding"].dtype == "float32"
    assert {w.dtype for w in nets.backbone.weights} == {"float32"}
    nets.set_dtype_policy("float32")
    assert nets.backbone(images)["embedding"].dtype == "float32"
