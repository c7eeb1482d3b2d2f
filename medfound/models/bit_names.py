"""BiT variable paths (``block1/unit01/a/group_norm/gamma``): the names every format shares.

Backend-neutral (NumPy and ``keras.ops``), so readers and writers of every format can use them
without TensorFlow.
"""
from __future__ import annotations

import re

import keras
import numpy as np

from medfound.models.configs import ROOT_KERNEL, ArchSpec
from medfound.models.layers import standardize_kernel

KERNEL_SUFFIX = "standardized_conv2d/kernel"  # ends the path of every convolution kernel
_UNIT = re.compile(r"^block(\d)/unit(\d\d)/")


def variable_names(spec: ArchSpec) -> list[str]:
    """The BiT paths of a module's variables, in the order the PhysioNet files list them."""
    names = [ROOT_KERNEL]
    for block, n_units in enumerate(spec.units):
        for unit in range(n_units):
            scope = f"block{block + 1}/unit{unit + 1:02d}"
            names += [f"{scope}/a/group_norm/gamma", f"{scope}/a/group_norm/beta"]
            if unit == 0:  # BiT always projects the shortcut in a block's first unit
                names.append(f"{scope}/a/proj/standardized_conv2d/kernel")
            names.append(f"{scope}/a/standardized_conv2d/kernel")
            for part in ("b", "c"):
                names += [f"{scope}/{part}/group_norm/gamma", f"{scope}/{part}/group_norm/beta",
                          f"{scope}/{part}/standardized_conv2d/kernel"]
    return names


def units_per_block(names) -> tuple[int, ...]:
    """Units per block, counted from BiT variable paths (``block3/unit36/...`` -> 36 in block 3)."""
    counts: dict[int, int] = {}
    for name in names:
        match = _UNIT.match(name)
        if match:
            block, unit = int(match.group(1)), int(match.group(2))
            counts[block] = max(counts.get(block, 0), unit)
    return tuple(counts[b] for b in sorted(counts))


def named_weights(backbone) -> dict[str, "keras.Variable"]:
    """{BiT path: Keras variable} of a native ``BiTBackbone``'s weights, without the final norm
    or head, in the backbone's layer order: the variables themselves, nothing copied."""
    from medfound.models.bit_weights import PREFIX, expected_keys

    wanted = set(variable_names(backbone.spec))
    weights = {key[len(PREFIX):]: weight for key, weight in expected_keys(backbone).items()
               if key[len(PREFIX):] in wanted}
    missing = wanted - set(weights)
    if missing:
        raise ValueError(f"backbone lacks BiT variables {sorted(missing)[:3]}")
    return weights


def named_tensors(backbone, fold: bool = False):
    """(BiT path, backend value) of each weight of ``named_weights``, one at a time and with no
    host copy: the variable's value, or with ``fold`` its standardised kernel (the inference
    form). The one place the export writers turn weights into what they store."""
    for name, weight in named_weights(backbone).items():
        if fold and name.endswith(KERNEL_SUFFIX):
            yield name, standardize_kernel(weight.value)
        else:
            yield name, weight.value


def named_values(backbone, fold: bool = False) -> dict[str, np.ndarray]:
    """{BiT path: NumPy copy} of ``named_tensors`` (timm and ONNX writers)."""
    return {name: keras.ops.convert_to_numpy(value)
            for name, value in named_tensors(backbone, fold)}
