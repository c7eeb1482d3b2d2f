"""RELIC (Mitrovic et al. 2021): the contrastive loss plus an invariance regulariser that makes an
image's similarity distribution over the batch the same whichever of its two views is used."""
from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from medfound.ssl.losses.ntxent import nt_xent_loss

DEFAULT_ALPHA = 1.0


class RelicOutput(NamedTuple):
    """The total loss, its contrastive (NT-Xent) and invariance (KL) parts, and the a->b logits
    and labels for accuracy and entropy metrics."""

    loss: tf.Tensor
    contrastive: tf.Tensor
    invariance: tf.Tensor
    logits: tf.Tensor
    labels: tf.Tensor


def relic_loss(z_a, z_b, temperature: float = 0.1, alpha: float = DEFAULT_ALPHA) -> RelicOutput:
    """NT-Xent over the global batch + ``alpha`` * KL(p_ab || p_ba), averaged over local examples.

    p_ab(i) = softmax_j(a_i . b_j / T) and p_ba(i) = softmax_j(b_i . a_j / T) over the global
    batch (features L2-normalised): the distribution of image i's similarity to every image j,
    seen from its view a and from its view b. The KL penalises any difference between them.
    """
    if not float(alpha) >= 0.0:
        raise ValueError(f"RELIC alpha must be >= 0, got {alpha!r}")
    out = nt_xent_loss(z_a, z_b, temperature)
    log_p_ab = tf.nn.log_softmax(out.logits_ab, axis=1)
    log_p_ba = tf.nn.log_softmax(out.logits_ba, axis=1)
    kl = tf.reduce_mean(tf.reduce_sum(tf.exp(log_p_ab) * (log_p_ab - log_p_ba), axis=1))
    return RelicOutput(loss=out.loss + float(alpha) * kl, contrastive=out.loss, invariance=kl,
                       logits=out.logits, labels=out.labels)
