"""Import of the public BiT checkpoints (``BiT-S-R50x1.npz`` ...) and BiT TF-Hub SavedModels.

Every checkpoint key names a BiT variable scope, e.g. ``resnet/block1/unit01/a/group_norm/gamma``;
the backbone's layers carry the same scopes as names, so import is a strict one-to-one lookup:
every key is consumed and every backbone weight assigned, or nothing is assigned at all.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from medfound.models.bit import BiTBackbone

PREFIX = "resnet/"
HEAD_SCOPE = "head/conv2d"
_TOP_SCOPES = re.compile(r"^(root_block|block\d+|group_norm|head)/")


class BiTWeightsError(ValueError):
    """A checkpoint does not match the backbone: names the keys and shapes that disagree."""


def expected_keys(model: BiTBackbone) -> dict[str, "object"]:
    """Maps each BiT checkpoint key the model needs to the Keras variable it fills."""
    variables = {}
    for layer in model.layers:
        for weight in layer.weights:
            scope = _scope_of(layer.name)
            variables[f"{PREFIX}{scope}/{weight.name}"] = weight
    return variables


def _scope_of(layer_name: str) -> str:
    """'block1_unit01_a_proj_standardized_conv2d' -> 'block1/unit01/a/proj/standardized_conv2d'."""
    scope = layer_name
    for word in ("standardized_conv2d", "group_norm", "root_block", "conv2d"):
        scope = scope.replace(word, word.replace("_", "\0"))
    return scope.replace("_", "/").replace("\0", "_")


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a BiT ``.npz`` or a TF-Hub BiT SavedModel folder into {checkpoint key: array}."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"BiT checkpoint not found: {path} (nothing is downloaded; "
                                "pass the local path of a BiT .npz or SavedModel folder)")
    if path.is_dir():
        return _read_saved_model(path)
    try:
        with np.load(path) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise BiTWeightsError(f"{path}: not a readable BiT .npz checkpoint ({err})") from err


def _read_saved_model(path: Path) -> dict[str, np.ndarray]:
    import tensorflow as tf

    if not (path / "saved_model.pb").exists():
        raise BiTWeightsError(f"{path}: folder has no saved_model.pb, so it is not a SavedModel")
    loaded = tf.saved_model.load(str(path))
    # Hub modules list their variables, but a plain SavedModel need not: walk the object graph.
    found = {id(v): v for v in tf.train.TrackableView(loaded).descendants()
             if isinstance(v, tf.Variable)}
    arrays = {}
    for var in found.values():
        name = re.sub(r":\d+$", "", var.name)
        if not _TOP_SCOPES.match(name):  # drop the model's own top scope ('resnet50/', ...)
            name = name.split("/", 1)[-1]
        arrays[PREFIX + name] = var.numpy()
    return arrays


def _fit(value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """The value in the target shape, allowing only squeezed unit dimensions (1x1 head kernel)."""
    if tuple(value.shape) == shape:
        return value
    if tuple(d for d in value.shape if d != 1) == tuple(d for d in shape if d != 1):
        return value.reshape(shape)
    return None


def load_bit_weights(model: BiTBackbone, path: str | os.PathLike, *,
                     include_head: bool = False) -> dict[str, str]:
    """Loads a BiT checkpoint into ``model`` and returns {checkpoint key: Keras variable path}.

    With ``include_head`` the classification head (``resnet/head/conv2d``) is loaded too and the
    model must have been built with the checkpoint's ``num_classes``; otherwise head keys are
    ignored (and so is the pre-head GroupNorm when the model has none, as REMEDIS modules).
    Any missing key, unused key or shape mismatch raises ``BiTWeightsError`` naming them, and
    then no weight is changed.
    """
    return assign_bit_arrays(model, read_checkpoint(path), str(path), include_head=include_head)


FINAL_NORM_SCOPE = "group_norm"


def assign_bit_arrays(model: BiTBackbone, arrays: dict[str, np.ndarray], source: str, *,
                      include_head: bool = False) -> dict[str, str]:
    """Assigns {BiT checkpoint key: array} to ``model`` by name, strictly (see load_bit_weights)."""
    path = source
    wanted = expected_keys(model)
    head_keys = {k for k in arrays if k.startswith(f"{PREFIX}{HEAD_SCOPE}/")}
    if include_head and not any(k.startswith(f"{PREFIX}{HEAD_SCOPE}/") for k in wanted):
        raise BiTWeightsError(f"{path}: include_head=True but the model has no head; build it "
                              "with num_classes equal to the checkpoint's classes")
    if not include_head:
        arrays = {k: v for k, v in arrays.items() if k not in head_keys}
        wanted = {k: v for k, v in wanted.items() if not k.startswith(f"{PREFIX}{HEAD_SCOPE}/")}
    if not model.final_norm:
        arrays = {k: v for k, v in arrays.items()
                  if not k.startswith(f"{PREFIX}{FINAL_NORM_SCOPE}/")}
    missing = sorted(set(wanted) - set(arrays))
    unexpected = sorted(set(arrays) - set(wanted))
    mismatched, fitted = [], {}
    for key in sorted(set(wanted) & set(arrays)):
        target = tuple(wanted[key].shape)
        value = _fit(arrays[key], target)
        if value is None:
            mismatched.append(f"{key}: checkpoint {tuple(arrays[key].shape)} vs model {target}")
        else:
            fitted[key] = value
    if missing or unexpected or mismatched:
        lines = [f"{path} does not match {model.name} ({model.spec.name}, width "
                 f"{model.spec.width}, units {model.spec.units}):"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches", mismatched)):
            if items:
                shown = items[:10] + ([f"... and {len(items) - 10} more"] if len(items) > 10 else [])
                lines.append(f"  {title} ({len(items)}): " + "; ".join(shown))
        raise BiTWeightsError("\n".join(lines))
    for key, value in fitted.items():
        wanted[key].assign(value.astype(np.float32))
    return {key: wanted[key].path for key in fitted}
