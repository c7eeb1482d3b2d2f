"""BiT ResNetV2 architecture specifications: the one table of every backbone size."""
from __future__ import annotations

import dataclasses

GROUPS = 32  # GroupNorm groups in every BiT model.
# How GroupNorm computes its variance: 'two_pass' (mean, then the mean of squared deviations:
# the centred map is materialised) or 'one_pass' (mean and mean of squares read from the same
# input, independent reductions XLA fuses into one pass; variance E[x^2] - E[x]^2, clamped at 0).
GN_STATISTICS = ("two_pass", "one_pass")
ROOT_FILTERS = 64  # Stem width before the width factor.
BLOCK_FILTERS = (64, 128, 256, 512)  # Bottleneck widths of the four blocks (x4 at the output).
BLOCK_STRIDES = (1, 2, 2, 2)
MIN_IMAGE_SIZE = 32  # Below this the last block's feature map would be empty.
# The stem kernel's BiT path: every BiT checkpoint and module has it.
ROOT_KERNEL = "root_block/standardized_conv2d/kernel"


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """A BiT ResNetV2: units per block and width factor (filters are multiplied by it)."""

    name: str
    units: tuple[int, int, int, int]
    width: float
    test_only: bool = False

    def __post_init__(self) -> None:
        if len(self.units) != 4 or any(u < 1 for u in self.units):
            raise ValueError(f"{self.name}: units must be four positive counts, got {self.units}")
        for base in (ROOT_FILTERS, *BLOCK_FILTERS):
            channels = base * self.width
            if channels != int(channels) or int(channels) % GROUPS:
                raise ValueError(
                    f"{self.name}: width {self.width} gives {channels} channels, which GroupNorm "
                    f"with {GROUPS} groups cannot split; use a multiple of 0.5"
                )

    @property
    def depth(self) -> int:
        """Layer depth as BiT counts it: 3 convolutions per unit plus the stem and the head."""
        return 3 * sum(self.units) + 2

    @property
    def root_filters(self) -> int:
        return int(ROOT_FILTERS * self.width)

    def block_filters(self, block: int) -> int:
        """Bottleneck (inner) width of block 0..3; its output has four times as many channels."""
        return int(BLOCK_FILTERS[block] * self.width)

    @property
    def embedding_dim(self) -> int:
        """Size of the pooled embedding (channels of block4: 2048 x width)."""
        return 4 * self.block_filters(3)

    def num_params(self, num_classes: int = 0, final_norm: bool = True) -> int:
        """Parameter count computed from the spec, without building the model (``final_norm=
        False``: the REMEDIS-module form, e.g. 23,496,256 for r50x1)."""
        total = 7 * 7 * 3 * self.root_filters
        in_ch = self.root_filters
        for block, n_units in enumerate(self.units):
            mid = self.block_filters(block)
            out = 4 * mid
            for unit in range(n_units):
                total += 2 * in_ch  # GroupNorm a
                if unit == 0:
                    total += in_ch * out  # projection shortcut (BiT always projects in unit 1)
                total += in_ch * mid + 2 * mid + 9 * mid * mid + 2 * mid + mid * out
                in_ch = out
        if final_norm:
            total += 2 * in_ch  # BiT's pre-head GroupNorm
        if num_classes:
            total += in_ch * num_classes + num_classes
        return total


def _spec(name: str, units: tuple[int, int, int, int], width: float, test_only: bool = False):
    return ArchSpec(name=name, units=units, width=width, test_only=test_only)


ARCHITECTURES: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in (
        _spec("r50x1", (3, 4, 6, 3), 1),
        _spec("r50x3", (3, 4, 6, 3), 3),
        _spec("r101x1", (3, 4, 23, 3), 1),
        _spec("r101x3", (3, 4, 23, 3), 3),
        _spec("r152x2", (3, 8, 36, 3), 2),
        _spec("r152x4", (3, 8, 36, 3), 4),
        # Small configurations for tests and CPU demos: the real code path, a fraction of the cost.
        _spec("tiny", (1, 1, 1, 1), 0.5, test_only=True),
        _spec("small", (2, 2, 2, 2), 0.5, test_only=True),
    )
}


def get_arch(arch: str | ArchSpec) -> ArchSpec:
    """Returns the spec for a name such as 'r50x1' (case-insensitive, 'R50x1' and 'r50x1' alike)."""
    if isinstance(arch, ArchSpec):
        return arch
    key = arch.lower().replace("-", "")
    if key not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[key]


def table_name(units, width) -> str | None:
    """The table's name of the architecture with these units and width, or None (a custom size)."""
    for spec in ARCHITECTURES.values():
        if spec.units == tuple(units) and float(spec.width) == float(width):
            return spec.name
    return None
