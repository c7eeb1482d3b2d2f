"""Writes a backbone as a timm folder: ``model.safetensors`` + ``config.json`` (+ a card).

``timm.create_model("local-dir:DIR", pretrained=True)`` (or ``hf-hub:OWNER/NAME`` after an
upload) builds timm's own ``resnetv2_*_bit`` from it; ``pretrained_cfg`` carries medfound's
input contract, so ``timm.data.create_transform(**resolve_model_data_config(model))`` prepares
images the way the module expects them. Kernels are stored standardised (folded): timm
standardises them again with epsilon 1e-8 where BiT uses 1e-10, which leaves a standardised
kernel unchanged to about 5e-9, while raw kernels would carry that epsilon difference into every
layer. Writing needs NumPy and ``safetensors`` only, no PyTorch.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from medfound.formats.metadata import ModuleMetadata
from medfound.formats.timm_folder import (CONFIG, CONTRACT_KEY, FINAL_NORM, METADATA_KEY,
                                          TIMM_ARCHITECTURES, WEIGHTS, timm_key, to_timm)
from medfound.utils.files import atomic_path

CARD = "README.md"
# The one line that turns timm's model(x) into the REMEDIS embedding (timm's BiT always applies a
# final GroupNorm in forward_features; REMEDIS modules have none).
EMBEDDING_LINE = "model.norm = torch.nn.Identity()  # REMEDIS has no final GroupNorm"


class TimmExportError(ValueError):
    """A backbone timm cannot build (a test-only or custom size)."""


def timm_architecture(backbone) -> str:
    """timm's name for the backbone's architecture; custom sizes have none."""
    from medfound.models.configs import table_name

    spec = backbone.spec
    name = TIMM_ARCHITECTURES.get(spec.name)
    if name is None or table_name(spec.units, spec.width) != spec.name:
        raise TimmExportError(f"timm has no architecture for {spec.name} (units {spec.units}, "
                              f"width {spec.width}); timm folders exist for "
                              f"{', '.join(TIMM_ARCHITECTURES)}")
    return name


def timm_tensors(backbone, fold: bool = True) -> dict[str, np.ndarray]:
    """{timm state-dict key: float32 array}: folded kernels (OIHW), GroupNorms, unit final norm
    (``fold=False`` keeps raw kernels: only to measure the epsilon difference, bench/)."""
    from medfound.models.bit_names import named_values

    tensors = {timm_key(name): to_timm(np.asarray(value, np.float32))
               for name, value in named_values(backbone, fold=fold).items()}
    channels = backbone.embedding_dim
    tensors[FINAL_NORM[0]] = np.ones(channels, np.float32)
    tensors[FINAL_NORM[1]] = np.zeros(channels, np.float32)
    return tensors


def timm_config(backbone, metadata: ModuleMetadata) -> dict:
    """config.json as timm's ``save_config_for_hf`` writes it, plus medfound's metadata."""
    contract = metadata.input_contract
    pretrained_cfg = {**contract.timm_data_config(), "num_classes": 0, "fixed_input_size": False,
                      "first_conv": "stem.conv", "classifier": "head.fc", "license": "apache-2.0"}
    return {"architecture": timm_architecture(backbone), "num_classes": 0,
            "num_features": int(backbone.embedding_dim), "global_pool": "avg",
            "pretrained_cfg": pretrained_cfg, CONTRACT_KEY: contract.to_dict(),
            METADATA_KEY: json.loads(metadata.to_json())}


def write_timm(backbone, metadata: ModuleMetadata, out: str | os.PathLike, *,
               fold: bool = True) -> Path:
    """Writes the timm folder ``out`` (through a temporary sibling, renamed when complete)."""
    from safetensors.numpy import save_file

    out = Path(out)
    config = timm_config(backbone, metadata)
    tensors = timm_tensors(backbone, fold=fold)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        (tmp / CARD).write_text(render_timm_card(config, metadata))
    return out


def render_timm_card(config: dict, metadata: ModuleMetadata) -> str:
    """The folder's README: what it is, how timm loads it, the input contract, the one line."""
    meta = config[METADATA_KEY]
    return "\n".join([
        "---", "library_name: timm", "license: apache-2.0", "tags: [image-feature-extraction, "
        "medical-imaging, remedis]", "---", "",
        f"# {meta['name']} (timm)", "",
        f"A {config['architecture']} backbone ({meta['arch']}, {meta['modality']}, initialised "
        f"from {meta['init']}), written by medfound {meta['medfound_version']}.", "",
        "```python", "import timm, torch",
        'model = timm.create_model("local-dir:PATH/TO/THIS/FOLDER", pretrained=True).eval()',
        EMBEDDING_LINE,
        "transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))",
        "embedding = model(transform(pil_image).unsqueeze(0))  # (1, "
        f"{config['num_features']}): the REMEDIS embedding",
        "block4 = model.forward_intermediates(x, indices=1, norm=False, "
        "intermediates_only=True)[0]  # the raw map hub modules return", "```", "",
        "## Input contract", "", *metadata.input_contract.card_lines(), ""])
