"""The input contract of every medfound model and artifact, from one place.

What a module expects (value range, size, channel order, colour, resizing, and for pathology the
tile size and microns per pixel) is decided here and written from here into every artifact: the
SavedModel and ``.keras`` metadata, the timm ``pretrained_cfg``, the model cards and the ONNX
metadata, so the contract travels with the weights instead of being guessed.
"""
from __future__ import annotations

import dataclasses

from medfound.models.input_check import HIGH_LIMIT, LOW_LIMIT
from medfound.registry import MODALITIES

# What the slide commands tile at by default (``--mpp 0.5``, about 20x) and the module's input.
PATHOLOGY_MPP = 0.5
COLOUR = {
    "cxr": "grayscale radiograph replicated to three identical channels",
    "path": "RGB as scanned (H&E), no stain normalisation",
}
# For frameworks that normalise outside the model (timm, ONNX users): (x - mean) / std gives
# what the model's first convolution sees.
NORMALISATION = {"bit": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))}


@dataclasses.dataclass(frozen=True)
class InputContract:
    """What a module's images must be; ``input_scaling`` is what the model does with them."""

    modality: str
    input_size: int
    input_scaling: str = "bit"  # 'bit': the model maps [0, 1] to [-1, 1] itself; 'none': as given
    value_range: tuple[float, float] = (0.0, 1.0)
    accepted_range: tuple[float, float] = (LOW_LIMIT, HIGH_LIMIT)  # resampling overshoot allowed
    dtype: str = "float32"
    layout: str = "NHWC"  # native and SavedModel; timm and ONNX take NCHW
    channel_order: str = "RGB"
    colour: str = ""
    resize: str = "bilinear, antialiased, whole image (no crop)"
    tile_size: int | None = None  # pathology: pixels of one tile at ``mpp``
    mpp: float | None = None  # pathology: microns per pixel of the tiles

    @property
    def mean(self) -> tuple[float, float, float]:
        return NORMALISATION[self.input_scaling][0]

    @property
    def std(self) -> tuple[float, float, float]:
        return NORMALISATION[self.input_scaling][1]

    def to_dict(self) -> dict:
        """JSON-ready form, with the normalisation a framework outside the model must apply."""
        data = dataclasses.asdict(self)
        data.update(mean=list(self.mean), std=list(self.std),
                    value_range=list(self.value_range), accepted_range=list(self.accepted_range))
        return data

    def timm_data_config(self) -> dict:
        """timm's ``pretrained_cfg`` data fields: ``create_transform`` on a [0, 1] image then
        gives exactly what the medfound model computes from that image."""
        return {"input_size": [3, self.input_size, self.input_size], "interpolation": "bilinear",
                "mean": list(self.mean), "std": list(self.std), "crop_pct": 1.0,
                "crop_mode": "center"}

    def card_lines(self) -> list[str]:
        """Markdown bullet lines for model cards."""
        lines = [f"- Input: {self.dtype} {self.layout} images, {self.channel_order}, values in "
                 f"[{self.value_range[0]:g}, {self.value_range[1]:g}] (pixels / 255), "
                 f"{self.input_size}x{self.input_size}; resize: {self.resize}",
                 f"- Colour: {self.colour}",
                 f"- Outside the model (timm, ONNX): normalise with mean {list(self.mean)}, "
                 f"std {list(self.std)}"]
        if self.mpp is not None:
            lines.append(f"- Pathology tiles: {self.tile_size}x{self.tile_size} px at "
                         f"{self.mpp:g} um/px (about 20x)")
        return lines


def input_contract(modality: str, input_size: int | None = None,
                   input_scaling: str = "bit") -> InputContract:
    """The contract of a ``cxr`` or ``path`` module (its registry size unless ``input_size``)."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; known: {', '.join(MODALITIES)}")
    size = int(input_size or MODALITIES[modality])
    pathology = modality == "path"
    return InputContract(modality=modality, input_size=size, input_scaling=input_scaling,
                         colour=COLOUR[modality], tile_size=size if pathology else None,
                         mpp=PATHOLOGY_MPP if pathology else None)
