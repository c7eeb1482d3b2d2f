"""``import medfound`` makes medfound's Keras classes known to ``keras.saving``, lazily.

``keras.saving.load_model`` (a ``.keras`` file, its folder form, ``hf://``) finds custom classes
only once they are registered. Importing them means importing Keras, which on the TensorFlow
backend imports TensorFlow: seconds that ``medfound --help`` should not pay. So registration
happens at once when Keras is already imported, and otherwise right after Keras' own import
finishes, through a one-shot import hook; on every backend either way.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# Every module that defines a class with @keras.saving.register_keras_serializable at import.
SERIALISABLE_MODULES = ("medfound.models.layers", "medfound.models.bit", "medfound.ssl.heads",
                        "medfound.optim.lars", "medfound.optim.schedules",
                        "medfound.finetune.model")


def register_all() -> None:
    """Imports (and so registers) every serialisable class; idempotent."""
    for name in SERIALISABLE_MODULES:
        importlib.import_module(name)


class _AfterKeras(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of ``keras`` so registration follows its import."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)  # one shot; the real finders do the finding
        spec = importlib.util.find_spec("keras")
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            register_all()

        spec.loader.exec_module = exec_then_register
        return spec


def register_when_keras_loads() -> None:
    """Registers now if Keras is imported, else right after it is."""
    if "keras" in sys.modules:
        register_all()
    elif not any(isinstance(f, _AfterKeras) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterKeras())
