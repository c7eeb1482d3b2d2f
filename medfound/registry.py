"""The eight REMEDIS hub-module names: the single source of truth for names and what they mean.

A name is ``{modality}-{size}-remedis-{init}``: modality ``cxr`` (chest X-ray, 448x448) or
``path`` (pathology, 224x224), size ``50x1`` or ``152x2`` (BiT ResNetV2), and ``s`` or ``m`` for
the Big Transfer initialisation (BiT-S: ImageNet-1k, BiT-M: ImageNet-21k).
"""
from __future__ import annotations

import dataclasses
import itertools
import re

from medfound.models.configs import ArchSpec, get_arch

MODALITIES: dict[str, int] = {"cxr": 448, "path": 224}  # modality -> default input size
INITS: dict[str, str] = {"s": "bit-s", "m": "bit-m"}  # name suffix -> BiT initialisation
INIT_DATA: dict[str, str] = {"bit-s": "ImageNet-1k (BiT-S)", "bit-m": "ImageNet-21k (BiT-M)"}
MODULE_SIZES: tuple[str, ...] = ("50x1", "152x2")
# Self-supervised objectives of `medfound pretrain --method` (classes: medfound.ssl.methods).
SSL_METHODS: tuple[str, ...] = ("simclr", "barlow", "moco", "byol", "relic")


@dataclasses.dataclass(frozen=True)
class HubModuleSpec:
    """What one REMEDIS module name stands for."""

    name: str
    modality: str
    arch: str
    init: str

    @property
    def input_size(self) -> int:
        return MODALITIES[self.modality]

    @property
    def arch_spec(self) -> ArchSpec:
        return get_arch(self.arch)


def _build() -> dict[str, HubModuleSpec]:
    specs = {}
    for modality, size, suffix in itertools.product(MODALITIES, MODULE_SIZES, INITS):
        name = f"{modality}-{size}-remedis-{suffix}"
        specs[name] = HubModuleSpec(name=name, modality=modality, arch=f"r{size}", init=INITS[suffix])
    return specs


HUB_MODULES: dict[str, HubModuleSpec] = _build()


def get_module_spec(name: str) -> HubModuleSpec:
    """Returns the spec of a REMEDIS module name, or raises a ValueError listing the valid names."""
    if name not in HUB_MODULES:
        raise ValueError(f"unknown module name {name!r}; valid names: {', '.join(HUB_MODULES)}")
    return HUB_MODULES[name]


def module_name(modality: str, arch: str, init: str) -> str:
    """The registry name for a modality, architecture and BiT initialisation ('bit-s'/'bit-m')."""
    for spec in HUB_MODULES.values():
        if (spec.modality, spec.arch, spec.init) == (modality, get_arch(arch).name, init):
            return spec.name
    raise ValueError(
        f"no REMEDIS module for modality={modality!r}, arch={arch!r}, init={init!r}; "
        f"valid names: {', '.join(HUB_MODULES)}"
    )


RESERVED_WORD = "remedis"  # only the eight names above may carry it
_CUSTOM_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def is_module_name(name: str) -> bool:
    """Whether ``name`` is a REMEDIS name or a valid custom module name."""
    return name in HUB_MODULES or (bool(_CUSTOM_NAME.match(name)) and RESERVED_WORD not in name)


def check_custom_name(name: str) -> str:
    """Validates the name of a module that is not one of the eight REMEDIS modules.

    Users publish what they trained on their own data (from random init, other sizes): such
    modules get their own names, lowercase letters, digits, '.', '_' and '-', and may not use
    the word 'remedis', so that no module can pass for one of the eight.
    """
    if name in HUB_MODULES:
        return name
    if RESERVED_WORD in name:
        raise ValueError(f"unknown module name {name!r}: names containing {RESERVED_WORD!r} are "
                         f"reserved for the eight REMEDIS modules; valid names: {', '.join(HUB_MODULES)}")
    if not _CUSTOM_NAME.match(name):
        raise ValueError(f"invalid module name {name!r}: use 1-64 lowercase letters, digits, "
                         "'.', '_' or '-', starting with a letter or digit")
    return name
