"""The metadata every exported module carries (name, architecture, data, provenance).

It is written as ``assets/medfound_module.json`` inside a SavedModel (and as a member of the same
name inside a ``.keras`` file), so ``medfound info`` can read it without loading TensorFlow.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tarfile
import zipfile
from pathlib import Path

METADATA_FILE = "medfound_module.json"  # file name inside assets/ (SavedModel) or the .keras zip
METADATA_ASSET = f"assets/{METADATA_FILE}"
FORMAT_VERSION = 2  # 2: PhysioNet structure (raw block4 output, BiT-named variables, no final norm)


@dataclasses.dataclass
class ModuleMetadata:
    """What an exported module is: enough to rebuild its backbone and to write its model card."""

    name: str  # registry name, e.g. 'cxr-50x1-remedis-m', or a custom name
    arch: str  # architecture name ('r50x1', ... or a test-only 'tiny')
    modality: str  # 'cxr' or 'path'
    input_size: int  # default square input size in pixels (448 cxr, 224 path)
    embedding_dim: int  # channels of the block4 map == length of the pooled embedding
    init: str  # 'bit-s' / 'bit-m' ('random' for custom modules trained from scratch)
    units: list[int] = dataclasses.field(default_factory=list)  # units per block as built
    width: float = 1.0
    init_checkpoint: str | None = None  # file name of the BiT checkpoint (no directories)
    init_sha256: str | None = None
    init_data: str = ""  # what the BiT initialisation was trained on
    method: str = "simclr"  # pretraining method, or 'none' for BiT weights exported as they are
    steps: int = 0
    pretraining_data: str = ""
    pretraining_image_size: int | None = None
    medfound_version: str = ""
    test_only: bool = False  # True for tiny test architectures exported under a registry name
    output_stride: int = 32
    # How the kernels are stored: raw, standardised in the graph (trainable, as the PhysioNet
    # files), or folded (pre-standardised inference form, not fine-tunable through the module).
    kernel_form: str = "standardize_in_graph"
    # How the SavedModel computes (export --xla, --group-norm-statistics): its forward pass one
    # XLA-compiled function (needs a TensorFlow with the XLA JIT), GroupNorm's variance formula.
    jit_compile: bool = False
    group_norm_statistics: str = "two_pass"
    input_scaling: str = "bit"  # 'bit': the module maps [0, 1] to [-1, 1] itself
    output: str = "block4"  # what __call__ returns: the raw block4 map ('feature_map' before v2)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        """The fields, plus the input contract they imply (``medfound.contract``), written out so
        that readers without medfound see it; ``from_json`` recomputes rather than trusts it."""
        data = dataclasses.asdict(self)
        data["input_contract"] = self.input_contract.to_dict()
        return json.dumps(data, indent=2, sort_keys=True)

    @property
    def input_contract(self):
        """What the module's images must be (range, size, channels, colour, pathology mpp)."""
        from medfound.contract import input_contract

        return input_contract(self.modality, self.input_size, self.input_scaling)

    @classmethod
    def from_json(cls, text: str, source: str = "<metadata>") -> "ModuleMetadata":
        """Parses metadata JSON, naming ``source`` in any error."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{source}: module metadata is not valid JSON ({err})") from err
        known = {f.name for f in dataclasses.fields(cls)}
        if int(data.get("format_version", 1)) < 2:  # modules written before the v2 contract
            data.setdefault("kernel_form", "folded")
            data.setdefault("output", "feature_map")
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   and f.name not in data]
        if missing:
            raise ValueError(f"{source}: module metadata lacks fields {missing}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def summary_lines(self) -> list[str]:
        """Human-readable 'key: value' lines, as ``medfound info`` prints them."""
        lines = [f"{f.name}: {getattr(self, f.name)}" for f in dataclasses.fields(self)]
        if self.test_only:
            lines.insert(0, "WARNING: test-only architecture; this is NOT a REMEDIS model")
        elif not self.is_remedis:
            lines.insert(0, "note: a custom module, not one of the eight REMEDIS modules")
        return lines

    @property
    def is_remedis(self) -> bool:
        """Whether this module carries one of the eight REMEDIS names."""
        from medfound.registry import HUB_MODULES

        return self.name in HUB_MODULES


def read_metadata(path: str | os.PathLike) -> ModuleMetadata:
    """Reads the metadata of a SavedModel folder, a ``.keras`` file or a hub ``.tar.gz`` module."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such module (a SavedModel folder, .keras or .tar.gz)")
    if path.is_dir():
        meta = path / METADATA_ASSET
        if not meta.is_file() and (path / "config.json").is_file() \
                and (path / METADATA_FILE).is_file():
            meta = path / METADATA_FILE  # a .keras file's folder form (Hugging Face layout)
        if not meta.is_file() and (path / "model.safetensors").is_file():
            return _timm_metadata(path)
        if not meta.is_file():
            kind = "a SavedModel" if (path / "saved_model.pb").exists() else "not a SavedModel"
            raise ValueError(f"{path}: {kind} without {METADATA_ASSET}, so not a medfound module")
        return ModuleMetadata.from_json(meta.read_text(), str(meta))
    if path.name.endswith(".keras"):
        try:
            with zipfile.ZipFile(path) as zf:
                text = zf.read(METADATA_FILE).decode()
            return ModuleMetadata.from_json(text, f"{path}!{METADATA_FILE}")
        except KeyError:
            raise ValueError(f"{path}: .keras file has no {METADATA_FILE}, so it is not a "
                             "medfound export") from None
        except zipfile.BadZipFile as err:
            raise ValueError(f"{path}: not a readable .keras file ({err})") from err
    if path.name.endswith((".tar.gz", ".tgz")):
        from medfound.formats.archive import UnsafeArchiveError, read_member

        try:
            text = read_member(path, METADATA_ASSET).decode()
        except KeyError:
            raise ValueError(f"{path}: archive has no {METADATA_ASSET}, so it is not a "
                             "medfound module") from None
        except (tarfile.TarError, OSError, EOFError) as err:
            raise ValueError(f"{path}: not a readable .tar.gz module ({err})") from err
        except UnsafeArchiveError as err:
            raise ValueError(str(err)) from err
        return ModuleMetadata.from_json(text, f"{path}!{METADATA_ASSET}")
    raise ValueError(f"{path}: unknown module format (expected a folder, .keras or .tar.gz)")


def _timm_metadata(path: Path) -> ModuleMetadata:
    """The metadata ``export --format timm`` writes into the folder's config.json."""
    from medfound.formats.timm_folder import CONFIG, METADATA_KEY

    try:
        config = json.loads((path / CONFIG).read_text())
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{path / CONFIG}: not valid JSON ({type(err).__name__})") from None
    if not isinstance(config, dict) or not isinstance(config.get(METADATA_KEY), dict):
        raise ValueError(f"{path}: a timm folder without medfound metadata (not written by "
                         "medfound export --format timm)")
    return ModuleMetadata.from_json(json.dumps(config[METADATA_KEY]), str(path / CONFIG))
