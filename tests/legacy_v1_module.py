"""Test helper: a module in the format medfound wrote before 0.2 (metadata format_version 1).

Reconstructed from that release's ``export/hub_module.py``: the folded Keras backbone's variables
as plain lists in layer order (Keras variable names, the final GroupNorm included), ``__call__``
returning the GroupNorm'd, ReLU'd feature map. Used to prove that old modules still load.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import tensorflow as tf

from medfound.formats.metadata import METADATA_FILE, ModuleMetadata
from medfound.models.bit import BiTBackbone
from medfound.models.inference import fold


class LegacyModule(tf.Module):
    variables = None
    trainable_variables = None
    regularization_losses = None

    def __init__(self, backbone: BiTBackbone, metadata_file: str, reverse: bool = False):
        super().__init__()
        import keras

        folded = fold(backbone)
        old_map = keras.Model(folded.input, folded.get_layer("pre_head_relu").output)
        self._forward = lambda images: old_map(images, training=False)
        self.variables = [v.value for v in folded.weights][::-1 if reverse else 1]
        self.trainable_variables = [v.value for v in folded.trainable_weights]
        self.regularization_losses = []
        self.metadata_file = tf.saved_model.Asset(metadata_file)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images):
        return self._forward(images)  # the v1 output: GroupNorm + ReLU of block4


def write_legacy_module(backbone: BiTBackbone, out: Path, name: str = "legacy-tiny",
                        reverse_variables: bool = False) -> Path:
    """Writes ``backbone`` (with its final norm) as a format-1 module folder at ``out``
    (``reverse_variables``: listed in reverse order, which a loader matching by name ignores)."""
    import json

    meta = ModuleMetadata(name=name, arch=backbone.spec.name, modality="cxr", input_size=448,
                          embedding_dim=backbone.embedding_dim, init="random",
                          units=list(backbone.spec.units), width=float(backbone.spec.width),
                          test_only=True)
    fields = dataclasses.asdict(meta)
    for new_in_v2 in ("kernel_form", "input_scaling", "output"):
        fields.pop(new_in_v2)
    fields["format_version"] = 1
    with tempfile.TemporaryDirectory() as scratch:
        meta_file = Path(scratch) / METADATA_FILE
        meta_file.write_text(json.dumps(fields))
        tf.saved_model.save(LegacyModule(backbone, str(meta_file), reverse_variables), str(out))
    return out
