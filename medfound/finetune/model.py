"""The fine-tuning model: a backbone (any spec ``medfound.load`` takes) plus a linear head.

The saved classifier maps float images in [0, 1] to ``{"logits", "probabilities"}``, so it can be
evaluated later without knowing how it was trained. Written in ``keras.ops`` only, so the same
classifier trains with ``model.fit`` on every Keras backend (TensorFlow, JAX, PyTorch).
"""
from __future__ import annotations

import keras
import numpy as np

from medfound.finetune.config import FALLBACK_IMAGE_SIZE, TASK_MODALITY

TASK_TYPES = ("multilabel", "binary", "multiclass")  # the head's output types


def output_activation(task: str) -> str:
    """The activation that turns the head's logits into probabilities for a task type."""
    if task not in TASK_TYPES:
        raise ValueError(f"task must be one of {TASK_TYPES}, got {task!r}")
    return "softmax" if task == "multiclass" else "sigmoid"


def default_image_size(task: str, module_size: int | None, override: int | None = None) -> int:
    """``override``, else the module's input size, else the task's modality size (cxr 448, path 224)."""
    from medfound.registry import MODALITIES

    if override:
        return int(override)
    if module_size:
        return int(module_size)
    modality = TASK_MODALITY.get(task)
    return MODALITIES[modality] if modality else FALLBACK_IMAGE_SIZE


def pooled_features(outputs):
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


def classifier(backbone: keras.Model, num_classes: int, task: str = "binary", *,
               train_backbone: bool = False, image_size: int | None = None,
               mean: np.ndarray | None = None, variance: np.ndarray | None = None) -> keras.Model:
    """A backbone with a new linear head, ready for ``compile`` / ``fit`` on any Keras backend.

    ``train_backbone=False`` is a linear probe (the backbone frozen, in inference mode);
    ``True`` fine-tunes end to end. ``mean`` / ``variance`` standardise the embedding first.
    """
    backbone.trainable = bool(train_backbone)
    return build_classifier(backbone, build_head(num_classes, mean, variance), task, image_size)
