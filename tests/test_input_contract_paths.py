"""The native backbone holds its input contract on every TensorFlow call path (issue 25, 8):
``model(x)``, ``model.predict(x)`` and ``tf.function(model)(x)``, as the exported graph does."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from medfound.models.bit import build_backbone
from medfound.models.input_check import ImageInputError


@pytest.fixture(scope="module")
def model():
    return build_backbone("tiny", final_norm=False)


GOOD = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
BAD = {"0-255": GOOD * 255, "[-1, 1] shifted": GOOD * 2 - 3, "NaN": np.where(GOOD > 0.5, np.nan, GOOD)}


@pytest.mark.parametrize("case", sorted(BAD))
def test_every_call_path_refuses_what_the_module_refuses(model, case):
    bad = BAD[case].astype("float32")
    with pytest.raises(ImageInputError):
        model(bad)
    with pytest.raises(ImageInputError):
        model(tf.constant(bad))  # eager tensor
    with pytest.raises(ImageInputError):
        model.predict(bad, verbose=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="images"):
        tf.function(lambda x: model(x)["embedding"])(tf.constant(bad))


def relative_error(got, want) -> float:
    """Largest difference relative to the largest value: graph and eager differ in rounding."""
    return float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())


def test_good_batches_pass_every_path_unchanged(model):
    want = model(GOOD)["embedding"].numpy()
    assert relative_error(model.predict(GOOD, verbose=0)["embedding"], want) < 1e-4
    traced = tf.function(lambda x: model(x)["embedding"])(tf.constant(GOOD)).numpy()
    assert relative_error(traced, want) < 1e-4
    with pytest.raises(ImageInputError, match="dtype uint8"):
        model(tf.constant((GOOD * 255).astype("uint8")))
