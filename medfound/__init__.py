"""medfound: build, publish and use REMEDIS-style medical imaging foundation models.

Keras 3 BiT ResNetV2 backbones with exact BiT weight import, contrastive self-supervised
pretraining on medical images, and TF-Hub modules that replace the PhysioNet REMEDIS release.

The public names below are imported on first use, so ``import medfound`` (and the command line)
does not pay for TensorFlow until a model is actually needed. Importing medfound registers its
Keras classes for ``keras.saving.load_model`` on every backend (``medfound.registration``).
"""
from __future__ import annotations

import importlib

from medfound.registration import register_when_keras_loads
from medfound.version import __version__

register_when_keras_loads()

# Public name -> module that defines it: the one index of the package's API.
_API = {
    "ARCHITECTURES": "medfound.models.configs",
    "ArchSpec": "medfound.models.configs",
    "get_arch": "medfound.models.configs",
    "BiTBackbone": "medfound.models.bit",
    "build_backbone": "medfound.models.bit",
    "BiTWeightsError": "medfound.models.bit_weights",
    "load_bit_weights": "medfound.models.bit_weights",
    "load": "medfound.resolve",
    "parse_spec": "medfound.resolve",
    "BackboneSpec": "medfound.resolve",
    "BackboneError": "medfound.resolve",
    "ModuleInfo": "medfound.formats.module_info",
    "InputContract": "medfound.contract",
    "input_contract": "medfound.contract",
    "classifier": "medfound.finetune.model",
    "export_module": "medfound.export.exporter",
    "HUB_MODULES": "medfound.registry",
    "HubModuleSpec": "medfound.registry",
    "get_module_spec": "medfound.registry",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'medfound' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
