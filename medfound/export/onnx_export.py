"""ONNX export of a REMEDIS module, written directly from the weights (``pip install medfound[onnx]``).

The graph takes ``images`` (B, H, W, 3) float32 in [0, 1] and returns, in this order,
``feature_map`` (the raw block4 map, what the SavedModel's ``__call__`` returns, so positional
clients reading output 0 get it) and ``embedding`` (its spatial mean).

The graph is built node by node with ``onnx.helper`` from the folded (pre-standardised) kernels,
mirroring ``medfound.export.hub_graph.forward``, rather than converted from a TensorFlow trace:
tf2onnx turned each NHWC GroupNorm into ~20 nodes with transposes around it (ORT ran that slower
than the SavedModel) and took minutes per export. Here the whole network runs in NCHW, with one
``Transpose`` at the input and one at the map output; every GroupNorm is
``Reshape (B, 32, -1) -> InstanceNormalization -> Reshape -> Mul gamma -> Add beta``, the pattern
ONNX Runtime runs as one normalisation kernel (or, with ``group_norm="onnx"``, opset 21's
``GroupNormalization``). Nothing checks the input in the graph (the SavedModel asserts shape,
range and NaN; ONNX runtimes do not all support asserts): the metadata entry ``medfound_input_check``
says so, and callers check their images (float32, [0, 1], (B, H, W, 3)) themselves.

One detail keeps onnxruntime exact: its optimiser fuses a zero ``Pad`` into a following
``MaxPool``, whose padding counts as -inf, not 0, which changes BiT's stem output. We pad
``x - 1`` with -1 and add 1 back, which is the same function but not a zero pad.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from medfound.formats.metadata import ModuleMetadata
from medfound.utils.files import atomic_path

OPSET = 17
OPSET_GROUP_NORMALIZATION = 21  # first opset whose GroupNormalization scales per channel
OUTPUTS = ["feature_map", "embedding"]  # output 0 is the map, as the SavedModel's __call__
GROUP_NORM_FORMS = ("instance_norm", "onnx")
INPUT_CHECK_NOTE = ("none: this graph does not check its input (the SavedModel asserts rank 4, 3 "
                    "channels, no NaN, values in [-0.5, 1.5]); pass float32 images (B, H, W, 3) "
                    "in [0, 1]")


def _require_onnx():
    try:
        import onnx
    except ImportError as err:
        raise ImportError(f"ONNX export needs onnx: pip install 'medfound[onnx]' ({err})") from err
    return onnx


class _Graph:
    """Nodes and initialisers of one ONNX graph under construction, with unique names."""

    def __init__(self):
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value, hint: str) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, *, output: str | None = None,
           **attrs) -> str:
        from onnx import helper

        out = output or self.name(hint)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.name(hint + "_op"),
                                           **attrs))
        return out


def _conv(g: _Graph, x: str, kernel_hwio: np.ndarray, stride: int, scope: str) -> str:
    """BiT's convolution (no bias): symmetric ``size // 2`` zero padding for k > 1, as the TF
    graph's SAME (stride 1) or explicit pad + VALID (stride 2)."""
    size = kernel_hwio.shape[0]
    pad = size // 2
    weight = g.const(np.ascontiguousarray(kernel_hwio.transpose(3, 2, 0, 1), np.float32),
                     f"{scope}/kernel")
    return g.op("Conv", [x, weight], scope, kernel_shape=[size, size], strides=[stride, stride],
                pads=[pad] * 4)


def _group_norm_relu(g: _Graph, x: str, gamma: np.ndarray, beta: np.ndarray, groups: int,
                     epsilon: float, scope: str, form: str) -> str:
    channels = gamma.shape[0]
    if form == "onnx":
        y = g.op("GroupNormalization", [x, g.const(gamma.astype(np.float32), f"{scope}/gamma"),
                                        g.const(beta.astype(np.float32), f"{scope}/beta")],
                 scope, num_groups=groups, epsilon=epsilon)
    else:
        grouped = g.op("Reshape", [x, g.const(np.array([0, groups, -1], np.int64),
                                              f"{scope}/grouped_shape")], f"{scope}/grouped")
        normed = g.op("InstanceNormalization",
                      [grouped, g.const(np.ones(groups, np.float32), f"{scope}/ones"),
                       g.const(np.zeros(groups, np.float32), f"{scope}/zeros")],
                      f"{scope}/normed", epsilon=epsilon)
        back = g.op("Reshape", [normed, g.op("Shape", [x], f"{scope}/shape")], f"{scope}/map")
        scaled = g.op("Mul", [back, g.const(gamma.reshape(channels, 1, 1).astype(np.float32),
                                            f"{scope}/gamma")], f"{scope}/scaled")
        y = g.op("Add", [scaled, g.const(beta.reshape(channels, 1, 1).astype(np.float32),
                                         f"{scope}/beta")], f"{scope}/shifted")
    return g.op("Relu", [y], f"{scope}/relu")


def build_graph(values: dict[str, np.ndarray], units: tuple[int, ...], *,
                input_scaling: str = "bit", group_norm: str = "instance_norm"):
    """The ONNX ``ModelProto`` of a folded BiT backbone from its ``{BiT path: value}``.

    ``values`` are ``bit_names.named_values(backbone, fold=True)`` (kernels HWIO, standardised).
    """
    from onnx import TensorProto, helper

    from medfound.models.bit_names import ROOT_KERNEL
    from medfound.models.configs import BLOCK_STRIDES, GROUPS
    from medfound.models.layers import GN_EPSILON

    if group_norm not in GROUP_NORM_FORMS:
        raise ValueError(f"group_norm must be one of {GROUP_NORM_FORMS}, got {group_norm!r}")
    g = _Graph()
    x = g.op("Transpose", ["images"], "to_nchw", perm=[0, 3, 1, 2])
    if input_scaling == "bit":
        x = g.op("Sub", [g.op("Mul", [x, g.const(np.float32(2.0), "two")], "scale"),
                         g.const(np.float32(1.0), "one")], "shift")
    x = _conv(g, x, values[ROOT_KERNEL], 2, "root_block")
    # Zero pad + 3x3/2 max pool, as Pad(x - 1, -1) -> MaxPool -> + 1 (see the module docstring).
    shifted = g.op("Sub", [x, g.const(np.float32(1.0), "stem_one")], "stem_shift")
    padded = g.op("Pad", [shifted, g.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
                                           "stem_pads"),
                          g.const(np.float32(-1.0), "stem_pad_value")], "stem_pad")
    pooled = g.op("MaxPool", [padded], "stem_pool", kernel_shape=[3, 3], strides=[2, 2])
    x = g.op("Add", [pooled, g.const(np.float32(1.0), "stem_unshift")], "stem")
    for block, (n_units, block_stride) in enumerate(zip(units, BLOCK_STRIDES)):
        for unit in range(n_units):
            scope = f"block{block + 1}/unit{unit + 1:02d}"
            stride = block_stride if unit == 0 else 1

            def norm_relu(y: str, part: str) -> str:
                return _group_norm_relu(g, y, values[f"{scope}/{part}/group_norm/gamma"],
                                        values[f"{scope}/{part}/group_norm/beta"], GROUPS,
                                        GN_EPSILON, f"{scope}/{part}", group_norm)

            def conv(y: str, part: str, s: int = 1) -> str:
                return _conv(g, y, values[f"{scope}/{part}/standardized_conv2d/kernel"], s,
                             f"{scope}/{part}")

            preact = norm_relu(x, "a")
            proj = f"{scope}/a/proj/standardized_conv2d/kernel"
            shortcut = _conv(g, preact, values[proj], stride, f"{scope}/a/proj") \
                if proj in values else x
            y = conv(preact, "a")
            y = conv(norm_relu(y, "b"), "b", stride)
            y = conv(norm_relu(y, "c"), "c")
            x = g.op("Add", [y, shortcut], f"{scope}/out")
    g.op("Transpose", [x], "to_nhwc", output=OUTPUTS[0], perm=[0, 2, 3, 1])
    pooled = g.op("GlobalAveragePool", [x], "pool")
    g.op("Flatten", [pooled], "embedding", output=OUTPUTS[1], axis=1)
    channels = int(values[f"block{len(units)}/unit{units[-1]:02d}/c/standardized_conv2d/kernel"]
                   .shape[-1])
    graph = helper.make_graph(
        g.nodes, "remedis_module",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", "height", "width", 3])],
        [helper.make_tensor_value_info(OUTPUTS[0], TensorProto.FLOAT,
                                       ["batch", "map_height", "map_width", channels]),
         helper.make_tensor_value_info(OUTPUTS[1], TensorProto.FLOAT, ["batch", channels])],
        initializer=g.initializers)
    opset = OPSET_GROUP_NORMALIZATION if group_norm == "onnx" else OPSET
    model = helper.make_model(graph, producer_name="medfound",
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 9)  # readable by onnxruntime >= 1.16
    return model


def write_onnx(backbone, metadata: ModuleMetadata, out: str | os.PathLike, *,
               group_norm: str = "instance_norm") -> Path:
    """Writes the folded backbone as ONNX at ``out`` (atomically); the module metadata goes into
    the model's ``metadata_props`` (``medfound_module``), with ``medfound_input_check`` saying that
    the graph does not check its input."""
    onnx = _require_onnx()
    from medfound.models.bit import module_form
    from medfound.models.bit_names import named_values

    backbone = module_form(backbone)
    model = build_graph(named_values(backbone, fold=True), tuple(backbone.spec.units),
                        input_scaling=getattr(backbone, "input_scaling", "bit"),
                        group_norm=group_norm)
    onnx.checker.check_model(model)
    for key, value in (("medfound_module", metadata.to_json()),
                       ("medfound_input_contract", json.dumps(metadata.input_contract.to_dict())),
                       ("medfound_input_check", INPUT_CHECK_NOTE),
                       ("medfound_group_norm", group_norm)):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_bytes(model.SerializeToString())
    return out
