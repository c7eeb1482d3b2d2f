"""Runs one medfound job under the Keras backend named by $KERAS_BACKEND, in a fresh process.

Used by tests/test_backends.py: ``python tests/backend_worker.py JOB ARGS...`` writes its result
as .npz and reports on stdout (JSON) whether TensorFlow was imported. Jobs:
``embed IMAGES.npy OUT_PREFIX SPEC...``: medfound.load(SPEC) on the images, or
keras.saving.load_model after ``import medfound`` for a spec written ``load_model:PATH``, into
OUT_PREFIX<i>.npz (``--no-tensorflow`` first: as if TensorFlow were not installed);
``fit KERAS OUT_PREFIX``: a linear probe, then full fine-tuning, with ``model.fit``, into
OUT_PREFIX{linear,full}.npz; ``contract KERAS``: a 0-255 batch given to the model.
"""
from __future__ import annotations

import json
import sys

import numpy as np


def _block_tensorflow() -> None:
    """Makes ``import tensorflow`` fail, as on a machine without it."""
    sys.modules["tensorflow"] = None  # type: ignore[assignment]


def embed(images: str, prefix: str, *specs: str) -> dict:
    if specs[0] == "--no-tensorflow":
        _block_tensorflow()
        specs = specs[1:]
    import keras

    import medfound

    x = np.load(images)
    classes = []
    for index, spec in enumerate(specs):
        try:
            if spec.startswith("load_model:"):
                model = keras.saving.load_model(spec[len("load_model:"):])
            else:
                model = medfound.load(spec)
        except medfound.BackboneError as err:
            return {"error": str(err)}
        features = model(x)
        np.savez(f"{prefix}{index}.npz",
                 feature_map=keras.ops.convert_to_numpy(features["feature_map"]))
        classes.append(type(model).__name__)
    return {"classes": classes}


def contract(spec: str) -> dict:
    """A 0-255 batch given to the native model on this backend: the one-line refusal."""
    import keras

    import medfound
    from medfound.models.input_check import ImageInputError

    model = medfound.load(spec)
    x = keras.ops.convert_to_tensor(np.full((1, 32, 32, 3), 200.0, "float32"))
    try:
        model(x)
    except ImageInputError as err:
        return {"refused": str(err)}
    return {"refused": None}


def fit(spec: str, prefix: str) -> dict:
    """Linear probe and full fine-tuning, one after the other in this process."""
    return {f"trainable_backbone_weights_{mode}": _fit(spec, mode, f"{prefix}{mode}.npz")
            for mode in ("linear", "full")}


def _fit(spec: str, mode: str, out: str) -> int:
    import keras

    import medfound

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (16, 32, 32, 3)).astype("float32")
    x[:8, :16] *= 0.2  # the positives are darker at the top: something to learn
    y = np.array([1.0] * 8 + [0.0] * 8, dtype="float32")[:, None]
    backbone = medfound.load(spec)
    before = _flat(backbone.weights)
    # The head standardises the raw block4 embedding with the starting backbone's statistics,
    # as medfound's fine-tuning does (unscaled, SGD on it diverges).
    start = keras.ops.convert_to_numpy(backbone.predict(x, verbose=0)["embedding"])
    model = medfound.classifier(backbone, 1, "binary", train_backbone=mode == "full",
                                image_size=32, mean=start.mean(0), variance=start.var(0))
    model.compile(optimizer=keras.optimizers.SGD(0.05 if mode == "linear" else 0.01),
                  loss={"logits": keras.losses.BinaryCrossentropy(from_logits=True)})
    history = model.fit(x, {"logits": y}, batch_size=8, epochs=3, shuffle=False, verbose=0)
    probabilities = keras.ops.convert_to_numpy(model.predict(x, verbose=0)["probabilities"])
    np.savez(out, loss=np.asarray(history.history["loss"]), probabilities=probabilities,
             backbone_before=before, backbone_after=_flat(backbone.weights))
    return len(backbone.trainable_weights)


def _flat(weights) -> np.ndarray:
    import keras

    return np.concatenate([np.ravel(keras.ops.convert_to_numpy(w)) for w in weights])


if __name__ == "__main__":
    job, *args = sys.argv[1:]
    result = {"embed": embed, "fit": fit, "contract": contract}[job](*args)
    import keras

    result.update(backend=keras.backend.backend(), tensorflow="tensorflow" in sys.modules
                  and sys.modules["tensorflow"] is not None)
    print(json.dumps(result))
