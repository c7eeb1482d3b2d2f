"""SavedModel folders (hub modules, PhysioNet files, BiT TF-Hub folders) as the native backbone.

SavedModels need TensorFlow to read, whatever the Keras backend: with TensorFlow installed they
load under ``KERAS_BACKEND=jax`` or ``torch`` too (their variables are read through it, the model
is built on the current backend). ``medfound.load`` (``medfound.resolve``) sends every SavedModel
it is given here: each format
medfound knows (``describe`` says which one a folder is) comes back as the native
``BiTBackbone`` (weight standardisation in the graph, every weight trainable), with its weights
matched by their BiT variable names. ``wrap_saved_model`` wraps any other image
SavedModel as a Keras model around its own variables.
"""
from __future__ import annotations

import os
from pathlib import Path

import keras
import tensorflow as tf

from medfound.formats.module_info import ModuleInfo, describe, saved_model_arrays

def load_saved_model(path: str | os.PathLike):
    """The native backbone of a SavedModel folder of any known format (see ``describe``)."""
    from medfound.models.bit import build_backbone
    from medfound.models.bit_weights import assign_bit_arrays

    path = Path(path)
    info = describe(path)
    if info.format == "medfound-v1":
        return _load_legacy_v1(path, info)
    arrays = saved_model_arrays(path)
    scalings = [info.input_scaling] if info.input_scaling else ["bit", "none"]
    loaded = tf.saved_model.load(str(path)) if info.format == "physionet" else None
    for scaling in scalings:
        backbone = build_backbone(info.arch, units=info.units_override, width=info.width_override,
                                  final_norm=info.final_norm, input_scaling=scaling)
        assign_bit_arrays(backbone, arrays, str(path))
        if loaded is None or _same_function(loaded, backbone):
            backbone.source = info
            info.input_scaling = scaling
            return backbone
    raise ValueError(f"{path}: the weights load by name, but the rebuilt {info.arch} backbone does "
                     "not reproduce the file's output with either input convention ([0, 1] scaled "
                     "to [-1, 1], or as given); the file is not a plain BiT ResNetV2")


def _same_function(loaded, backbone) -> bool:
    """Whether the file's own ``__call__`` and the rebuilt backbone agree on a probe batch."""
    import numpy as np

    probe = np.random.RandomState(0).rand(1, 64, 64, 3).astype("float32")
    theirs = np.asarray(loaded(tf.constant(probe)))
    ours = keras.ops.convert_to_numpy(backbone(probe, training=False)["feature_map"])
    scale = float(np.abs(theirs).max()) or 1.0
    return theirs.shape == ours.shape and float(np.abs(theirs - ours).max()) <= 1e-4 * scale


def _load_legacy_v1(module_dir: Path, info: "ModuleInfo"):
    """A module written before the PhysioNet-structured format (medfound < 0.2): its variables
    are the Keras backbone's (named by their Keras paths), with folded kernels and the final
    GroupNorm. Standardising a folded kernel again leaves it unchanged, so the rebuilt model
    computes the same features; the old module's output is the rebuilt model's GroupNorm'd
    ``pre_logits``. Variables are matched by name, so swapped or renamed ones are refused."""
    from medfound.models.bit import build_backbone

    backbone = build_backbone(info.arch, units=info.units_override, width=info.width_override,
                              final_norm=True)
    module = tf.saved_model.load(str(module_dir))
    values = {v.name.split(":")[0]: v for v in module.variables}
    wanted = {w.path: w for w in backbone.weights}
    missing, extra = sorted(set(wanted) - set(values)), sorted(set(values) - set(wanted))
    if missing or extra:
        raise ValueError(f"{module_dir}: its variables do not match a {info.arch} backbone "
                         f"(missing {missing[:3]}, unexpected {extra[:3]}); the module is "
                         "damaged or mislabeled")
    for path, weight in wanted.items():
        value = values[path]
        if tuple(weight.shape) != tuple(value.shape):
            raise ValueError(f"{module_dir}: variable {path} has shape {tuple(value.shape)} "
                             f"but the backbone needs {tuple(weight.shape)}")
        weight.assign(value.numpy())
    backbone.source = info
    return backbone


def wrap_saved_model(saved_model_dir: str | os.PathLike, input_shape=(None, None, 3)):
    """A Keras 3 model around any image SavedModel (``images -> outputs``), variables trainable."""
    layer = SavedModelLayer(str(saved_model_dir))
    inputs = keras.Input(input_shape, name="images")
    return keras.Model(inputs, layer(inputs), name=Path(saved_model_dir).name.replace("-", "_"))


class SavedModelLayer(keras.layers.Layer):
    """A Keras 3 layer calling a SavedModel's ``__call__`` (or its ``serving_default`` signature).

    The SavedModel's own ``tf.Variable`` objects become the layer's weights (the same variables,
    not copies), so an optimizer step on the layer changes what the SavedModel computes. Its
    trainable variables are those the SavedModel lists in ``trainable_variables`` (the reusable
    SavedModel API) or, failing that, those created with ``trainable=True``.
    """

    def __init__(self, saved_model_dir: str, **kwargs):
        super().__init__(**kwargs)
        self.saved_model_dir = saved_model_dir
        self._loaded = tf.saved_model.load(saved_model_dir)
        obj = self._loaded
        self._signature = None
        if _has_restored_call(obj):
            self._fn = obj.__call__
            self._takes_training = hasattr(obj, "trainable_variables")
        elif "serving_default" in obj.signatures:
            self._fn = self._signature = obj.signatures["serving_default"]
            self._takes_training = False
        else:
            raise ValueError(f"{saved_model_dir}: SavedModel has neither __call__ nor a "
                             "serving_default signature to call")
        variables = list(getattr(obj, "variables", None) or self._function_variables())
        trainable_ids = {id(v) for v in (getattr(obj, "trainable_variables", None)
                                         or [v for v in variables if v.trainable])}
        for index, variable in enumerate(variables):
            clean = variable.name.split(":")[0].replace("/", "_")  # Keras names have no '/'
            weight = keras.Variable(variable, trainable=id(variable) in trainable_ids,
                                    name=f"v{index}_{clean}")
            self._track_variable(weight)
        self.built = True

    def _function_variables(self) -> list:
        functions = getattr(self._fn, "concrete_functions", None) or [self._fn]
        seen, found = set(), []
        for fn in functions:
            for v in fn.variables:
                if id(v) not in seen:
                    seen.add(id(v))
                    found.append(v)
        return found

    def call(self, inputs, training=False):
        if self._signature is not None:
            (arg_name,) = self._signature.structured_input_signature[1].keys()
            out = self._signature(**{arg_name: inputs})
            return next(iter(out.values())) if len(out) == 1 else out
        if self._takes_training:
            return self._fn(inputs, training=bool(training))
        return self._fn(inputs)


def _has_restored_call(obj) -> bool:
    """Whether a loaded SavedModel object has a saved ``__call__`` function."""
    return "__call__" in getattr(type(obj), "__dict__", {}) or "__call__" in vars(obj)
