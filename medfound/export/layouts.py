"""``medfound publish --layout kaggle|huggingface``: a release laid out where people look for models.

* ``kaggle/``: the Kaggle Models layout. ``model-metadata.json`` (for ``kaggle models create``)
  and one variation folder per module, ``tensorFlow2/<name>/``, holding the SavedModel files and
  ``model-instance-metadata.json`` (for ``kaggle models instances create -p FOLDER -r tar``: the
  CLI skips sub-folders unless told to upload them). What Kaggle serves for a version is that
  folder's contents, so ``hub.load`` and ``medfound.load`` are tested on the variation folder.
* ``huggingface/<name>/``: one Hub repository folder per module: the native backbone in the
  folder form of a ``.keras`` file (``config.json``, ``metadata.json``, ``model.weights.h5``:
  what ``keras.saving.load_model('hf://owner/name')`` downloads and reads), the module metadata
  and a ``README.md`` model card opening with the YAML block the Hub reads; beside it
  ``huggingface/<name>-timm/``, the same weights for ``timm.create_model('hf-hub:OWNER/NAME-timm')``
  (``config.json``, ``model.safetensors``, card), for the sizes timm has.

Both get a ``manifest.json`` (format, per-file SHA-256, module metadata, probe fingerprints)
and ``SHA256SUMS`` with paths relative to the layout folder, so ``medfound verify`` checks them
as it checks the folder release. The layout folder is built under a temporary name and renamed.
"""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

from medfound.formats.metadata import METADATA_FILE, ModuleMetadata, read_metadata
from medfound.utils.files import atomic_path, sha256_file
from medfound.version import __version__

LAYOUTS = ("folder", "kaggle", "huggingface")
LAYOUT_FORMAT = "medfound-release-layout"
KAGGLE_FRAMEWORK = "tensorFlow2"  # Kaggle's spelling, as in kaggle.com/models/OWNER/MODEL/tensorFlow2/...
KAGGLE_OWNER_PLACEHOLDER = "INSERT_OWNER_SLUG_HERE"  # the Kaggle CLI's own placeholder
HF_KERAS_FILES = ("config.json", "metadata.json", "model.weights.h5")
HF_CARD = "README.md"
# --license choices: the Hub's identifier -> Kaggle's licence name.
LICENSES = {"apache-2.0": "Apache 2.0", "cc-by-4.0": "CC BY 4.0", "cc-by-nc-4.0": "CC BY-NC 4.0",
            "mit": "MIT"}
BIT_RELEASE = "https://storage.googleapis.com/bit_models/"  # where the BiT checkpoints are served
BIT_PAPER = "https://github.com/google-research/big_transfer"


def bit_base_url(meta: ModuleMetadata) -> str:
    """The BiT checkpoint this module started from, as a URL ('' for a random start)."""
    if meta.init == "random":
        return ""
    return BIT_RELEASE + meta.init_checkpoint if meta.init_checkpoint else BIT_PAPER


def usage_markdown(meta: ModuleMetadata, path: str) -> str:
    size = meta.input_size
    return "\n".join([
        "```python", "import tensorflow as tf, tensorflow_hub as hub, medfound",
        f"module = hub.load({path!r})  # TF2 SavedModel",
        f"# images: float32 (B, {size}, {size}, 3) in [0, 1]",
        "features = module(images)",
        f"backbone = medfound.load({path!r})  # the same weights as a Keras 3 model to fine-tune",
        "```"])


def hub_usage(meta: ModuleMetadata) -> str:
    size = meta.input_size
    return "\n".join([
        "```python", "import keras, medfound  # importing medfound registers the BiT layers",
        f"backbone = keras.saving.load_model('hf://OWNER/{meta.name}')",
        "# or from a local copy of the repository: medfound.load('PATH/TO/THE/FOLDER')",
        f"# images: float32 (B, {size}, {size}, 3) in [0, 1]",
        "embedding = backbone(images)['embedding']  # mean of the block4 map, as the module",
        "```"])


def kaggle_model_metadata(owner: str, slug: str, release_card: str) -> dict:
    """``model-metadata.json`` as ``kaggle models create -p FOLDER`` reads it."""
    return {"ownerSlug": owner, "title": "medfound REMEDIS modules", "slug": slug,
            "subtitle": "REMEDIS-style medical imaging foundation models (BiT ResNetV2, TF2)",
            "isPrivate": True, "description": release_card, "publishTime": "",
            "provenanceSources": ""}


def kaggle_instance_metadata(meta: ModuleMetadata, *, owner: str, model_slug: str,
                             license_id: str, module_card: str) -> dict:
    """``model-instance-metadata.json`` as ``kaggle models instances create -p FOLDER`` reads it."""
    base = bit_base_url(meta)
    return {"ownerSlug": owner, "modelSlug": model_slug, "instanceSlug": meta.name,
            "framework": KAGGLE_FRAMEWORK, "overview": module_card,
            "usage": usage_markdown(meta, "PATH_TO_THIS_VARIATION"),
            "licenseName": LICENSES[license_id], "fineTunable": True,
            "trainingData": [meta.pretraining_data] if meta.pretraining_data else [],
            "modelInstanceType": "ExternalVariant" if base else "Unspecified",
            "baseModelInstanceId": 0, "externalBaseModelUrl": base}


def hub_card(meta: ModuleMetadata, module_card: str, license_id: str) -> str:
    """The Hugging Face ``README.md``: the YAML metadata block the Hub reads, then the card."""
    tags = ["medical-imaging", "remedis", "bit", "resnetv2", "self-supervised", "feature-extraction",
            {"cxr": "chest-x-ray", "path": "pathology"}.get(meta.modality, meta.modality), "medfound"]
    if meta.test_only:
        tags.append("test-only")
    lines = ["---", "library_name: keras", f"license: {license_id}",
             "pipeline_tag: image-feature-extraction", "tags:"]
    lines += [f"- {tag}" for tag in tags]
    lines += ["---", "", module_card]
    return "\n".join(lines)


def write_native_backbone(model, target: Path, module_dir: Path) -> None:
    """The module's native Keras backbone (``medfound.load(module_dir)``, the trainable Keras 3
    model), as the folder form of a ``.keras`` file."""
    keras_file = target / ".backbone.keras"
    model.save(str(keras_file))
    with zipfile.ZipFile(keras_file) as zf:
        members = zf.namelist()
        if sorted(members) != sorted(HF_KERAS_FILES):
            raise ValueError(f"{module_dir}: the Keras file holds {members}, expected "
                             f"{list(HF_KERAS_FILES)}")
        zf.extractall(target)
    keras_file.unlink()


def write_timm_unit(model, meta: ModuleMetadata, layout_dir: Path) -> str | None:
    """``<name>-timm/``: the same weights as a timm repository folder (``hf-hub:OWNER/NAME-timm``),
    with the module metadata beside timm's files; None for a size timm has no model for."""
    from medfound.export.timm_export import TimmExportError, timm_architecture, write_timm

    try:
        timm_architecture(model)
    except TimmExportError:
        return None
    unit = f"{meta.name}-timm"
    write_timm(model, meta, layout_dir / unit)
    (layout_dir / unit / METADATA_FILE).write_text(meta.to_json())
    return unit


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _replaceable(out: Path) -> None:
    """Refuses to replace ``out`` unless it is a layout medfound wrote before."""
    if not out.exists():
        return
    manifest = out / "manifest.json"
    from medfound.utils.limits import read_json

    try:
        ok = read_json(manifest, what="layout manifest").get("format") == LAYOUT_FORMAT
    except (OSError, ValueError, AttributeError):  # too large, too deep, not JSON: not ours
        ok = False
    if not ok:
        raise ValueError(f"{out}: exists and is not a layout medfound published; move it away")


def publish_layout(release_dir: Path, layout: str, modules: list[tuple[Path, ModuleMetadata,
                   dict, str]], *, release_card: str, license_id: str = "apache-2.0",
                   owner: str = KAGGLE_OWNER_PLACEHOLDER, model_slug: str = "medfound-remedis"
                   ) -> dict:
    """Writes ``release_dir/<layout>/``; ``modules`` holds (folder, metadata, probe, module card).

    Returns the layout's manifest.
    """
    from medfound.resolve import load

    if license_id not in LICENSES:
        raise ValueError(f"licence {license_id!r}: choose one of {', '.join(LICENSES)}")
    out = release_dir / layout
    _replaceable(out)
    entries: dict[str, dict] = {}
    with atomic_path(out) as tmp:
        tmp.mkdir()
        if layout == "kaggle":
            (tmp / "model-metadata.json").write_text(json.dumps(
                kaggle_model_metadata(owner, model_slug, release_card), indent=1))
        for folder, meta, probe, card in modules:
            timm_unit = None
            if layout == "kaggle":
                unit = Path(KAGGLE_FRAMEWORK) / meta.name
                shutil.copytree(folder, tmp / unit)
                (tmp / unit / "model-instance-metadata.json").write_text(json.dumps(
                    kaggle_instance_metadata(meta, owner=owner, model_slug=model_slug,
                                             license_id=license_id, module_card=card), indent=1))
            else:
                unit = Path(meta.name)
                (tmp / unit).mkdir()
                model = load(folder)  # once, for the Keras folder and the timm folder
                write_native_backbone(model, tmp / unit, folder)
                (tmp / unit / METADATA_FILE).write_text(meta.to_json())
                (tmp / unit / HF_CARD).write_text(hub_card(meta, card, license_id))
                timm_unit = write_timm_unit(model, meta, tmp)
            entries[meta.name] = {"folder": unit.as_posix(), "metadata": json.loads(meta.to_json()),
                                  "probe": probe}
            if timm_unit:
                entries[meta.name]["timm_folder"] = timm_unit
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in _files_under(tmp)}
        manifest = {"format": LAYOUT_FORMAT, "format_version": 1, "layout": layout,
                    "medfound_version": __version__, "license": license_id,
                    "files": files, "modules": entries}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        sums = {**files, "manifest.json": sha256_file(tmp / "manifest.json")}
        (tmp / "SHA256SUMS").write_text("".join(f"{h}  {n}\n" for n, h in sorted(sums.items())))
    return manifest


def layout_module_metadata(folder: Path, layout: str) -> ModuleMetadata:
    """The metadata a published unit carries: the SavedModel's asset or the HF folder's file."""
    if layout == "kaggle":
        return read_metadata(folder)
    path = folder / METADATA_FILE
    return ModuleMetadata.from_json(path.read_text(), str(path))

