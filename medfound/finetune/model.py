"""The fine-tuning model: a backbone (any spec ``medfound.load`` takes) plus a linear head.

The saved classifier maps float images in [0, 1] to ``{"logits", "probabilities"}``, so it can be
evaluated later without knowing how it was trained.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from medfound.finetune.config import FALLBACK_IMAGE_SIZE, TASK_MODALITY
from medfound.finetune.losses import output_activation


def default_image_size(task: str, module_size: int | None, override: int | None = None) -> int:
    """``override``, else the module's input size, else the task's modality size (cxr 448, path 224)."""
    from medfound.registry import MODALITIES

    if override:
        return int(override)
    if module_size:
        return int(module_size)
    modality = TASK_MODALITY.get(task)
    return MODALITIES[modality] if modality else FALLBACK_IMAGE_SIZE


def pooled_features(outputs) -> tf.Tensor:
    """The (B, D) embedding of a backbone's outputs: ``embedding`` of a dict (the average of the
    raw block4 map, as REMEDIS modules give it), or a pooled feature map."""
    if isinstance(outputs, dict):
        if "embedding" in outputs:
            outputs = outputs["embedding"]
        elif "default" in outputs:
            outputs = outputs["default"]
        else:
            raise ValueError(f"backbone outputs {sorted(outputs)} have no 'embedding' or 'default' embedding")
    if len(outputs.shape) == 4:
        outputs = keras.ops.mean(outputs, axis=(1, 2))
    if len(outputs.shape) != 2:
        raise ValueError(f"backbone output has shape {tuple(outputs.shape)}; expected (B, D) or (B, H, W, D)")
    return outputs


@keras.saving.register_keras_serializable(package="medfound")
class PooledFeatures(keras.layers.Layer):
    """Keras layer form of ``pooled_features`` for use inside the saved classifier graph."""

    def call(self, outputs):
        return pooled_features(outputs)


def build_head(num_classes: int, mean: np.ndarray | None = None, variance: np.ndarray | None = None) -> keras.Sequential:
    """A linear head (zero-initialised, as BiT), optionally standardising features with fixed statistics first."""
    layers = []
    if mean is not None:
        layers.append(keras.layers.Normalization(mean=mean, variance=variance, name="feature_standardization"))
    layers.append(keras.layers.Dense(num_classes, kernel_initializer="zeros", name="head_dense"))
    return keras.Sequential(layers, name="head")


def build_classifier(backbone: keras.Model, head: keras.Model, task: str, image_size: int | None = None) -> keras.Model:
    """images (B, H, W, 3) in [0, 1] -> {"logits", "probabilities"}: the backbone, its pooled embedding and the head."""
    inputs = keras.Input((image_size, image_size, 3), name="images")
    features = PooledFeatures(name="embedding")(backbone(inputs))
    logits = head(features)
    probabilities = keras.layers.Activation(output_activation(task), name="probabilities")(logits)
    return keras.Model(inputs, {"logits": logits, "probabilities": probabilities}, name="classifier")
