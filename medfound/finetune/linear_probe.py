"""Linear probes: a logistic regression on frozen embeddings, the cheapest measure of features.

Multi-label aware (one sigmoid per class, masked entries ignored), full-batch and seeded, so the
same embeddings always give the same probe.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf


@dataclasses.dataclass
class LinearProbe:
    """Standardisation statistics and the weights of one sigmoid per class."""

    mean: np.ndarray
    std: np.ndarray
    kernel: np.ndarray  # (D, K)
    bias: np.ndarray  # (K,)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Probabilities (N, K) for embeddings (N, D)."""
        logits = ((features - self.mean) / self.std) @ self.kernel + self.bias
        return 1.0 / (1.0 + np.exp(-logits))


def fit_linear_probe(features: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *,
                     steps: int = 300, learning_rate: float = 0.05, l2: float = 1e-3,
                     seed: int = 0) -> LinearProbe:
    """Fits a logistic regression per class on standardised features (full batch, Adam)."""
    features = np.asarray(features, np.float32)
    labels = np.asarray(labels, np.float32).reshape(len(features), -1)
    mask = np.ones_like(labels) if mask is None else np.asarray(mask, np.float32).reshape(labels.shape)
    if len(features) < 2 or not np.isfinite(features).all():
        raise ValueError(f"linear probe needs >= 2 finite embeddings, got {features.shape}")
    mean, std = features.mean(0), features.std(0) + 1e-6
    x = tf.constant((features - mean) / std)
    y, m = tf.constant(labels), tf.constant(mask)
    rng = np.random.default_rng(seed)
    kernel = tf.Variable(rng.normal(0, 0.01, (features.shape[1], labels.shape[1])).astype(np.float32))
    bias = tf.Variable(np.zeros(labels.shape[1], np.float32))
    optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = x @ kernel + bias
            loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits)
            loss = tf.reduce_sum(loss * m) / tf.maximum(tf.reduce_sum(m), 1.0)
            loss += l2 * tf.reduce_sum(tf.square(kernel))
        optimizer.apply_gradients(zip(tape.gradient(loss, [kernel, bias]), [kernel, bias]))
        return loss

    for _ in range(steps):
        step()
    return LinearProbe(mean, std, kernel.numpy(), bias.numpy())


def embed_rows(forward: Callable[[tf.Tensor], tf.Tensor], dataset, image_size: int,
               batch_size: int = 64, center_crop: bool | float = False) -> np.ndarray:
    """``forward(images)`` over a ``LabeledDataset``'s batches, rows in the dataset's order.

    The one embedding (or logits) loop of fine-tuning, evaluation and the quickstart: ``forward``
    may be a hub module's function, a traced Keras backbone or a classifier.
    """
    from medfound.data.images import naming_bad_images

    index, rows = [], []
    with naming_bad_images(getattr(dataset, "paths", None)):
        for batch in dataset.tf_dataset(image_size, batch_size, center_crop=center_crop):
            index.append(batch["index"].numpy())
            rows.append(np.asarray(forward(batch["image"])))
    index_all, rows_all = np.concatenate(index), np.concatenate(rows)
    out = np.empty_like(rows_all)
    out[index_all] = rows_all
    return out


def embed(embed_fn: Callable[[tf.Tensor], tf.Tensor], dataset, image_size: int,
          batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embeddings, labels and masks of a ``LabeledDataset`` under ``embed_fn(images) -> (B, D)``."""
    return embed_rows(embed_fn, dataset, image_size, batch_size), dataset.labels, dataset.mask
