"""ONNX export of a REMEDIS module through tf2onnx (optional extra: ``pip install medfound[onnx]``).

The graph takes ``images`` (B, H, W, 3) float32 in [0, 1] and returns, in this order,
``feature_map`` (the raw block4 map, what the SavedModel's ``__call__`` returns, so positional
clients reading output 0 get it) and ``embedding`` (its spatial mean); there are no in-graph input
checks, which ONNX runtimes do not all support. One rewrite keeps onnxruntime exact: its graph optimiser fuses a zero ``Pad`` into a
following ``MaxPool``, whose padding counts as -inf, not 0, which changes BiT's stem output. We
pad ``x - 1`` with -1 and add 1 back, which is the same function but not a zero pad.
"""
from __future__ import annotations

import os
from pathlib import Path

from medfound.export.metadata import ModuleMetadata
from medfound.utils.files import atomic_path

OPSET = 17
OUTPUTS = ["feature_map", "embedding"]  # output 0 is the map, as the SavedModel's __call__


def _require_tf2onnx():
    try:
        import onnx  # noqa: F401
        import tf2onnx
    except ImportError as err:
        raise ImportError("ONNX export needs tf2onnx and onnx: pip install 'medfound[onnx]' "
                          f"({err})") from err
    return tf2onnx


def _shift_zero_pads_before_maxpool(model) -> int:
    """Rewrites every zero ``Pad`` feeding only a ``MaxPool`` as Sub 1 / Pad -1 / ... / Add 1.

    Returns the number of rewritten pads. ``MaxPool(Pad(x, 0)) == MaxPool(Pad(x - 1, -1)) + 1``.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    inits = {i.name: i for i in graph.initializer}
    rewritten = 0
    for pad in list(graph.node):
        if pad.op_type != "Pad":
            continue
        users = consumers.get(pad.output[0], [])
        if len(users) != 1 or users[0].op_type != "MaxPool":
            continue
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        value = pad.input[2] if len(pad.input) > 2 else ""
        if mode != b"constant" or (value and (value not in inits or
                                              numpy_helper.to_array(inits[value]).any())):
            continue
        pool = users[0]
        tag = f"{pad.name or pad.output[0]}__shift"
        one, minus_one = f"{tag}_one", f"{tag}_minus_one"
        graph.initializer.extend([numpy_helper.from_array(np.array(1.0, np.float32), one),
                                  numpy_helper.from_array(np.array(-1.0, np.float32), minus_one)])
        shifted = f"{tag}_input"
        sub = helper.make_node("Sub", [pad.input[0], one], [shifted], name=f"{tag}_sub")
        pad.input[0] = shifted
        while len(pad.input) < 3:
            pad.input.append("")
        pad.input[2] = minus_one
        pooled, final = f"{tag}_pooled", pool.output[0]
        pool.output[0] = pooled
        add = helper.make_node("Add", [pooled, one], [final], name=f"{tag}_add")
        nodes = list(graph.node)
        del graph.node[:]
        for node in nodes:
            if node is pad:
                graph.node.append(sub)
            graph.node.append(node)
            if node is pool:
                graph.node.append(add)
        rewritten += 1
    return rewritten


def _rename_outputs(model, names: list[str]) -> None:
    """Gives the graph outputs (in order) the names ``names``, rewiring the nodes that make them."""
    graph = model.graph
    for output, name in zip(graph.output, names):
        old = output.name
        for node in graph.node:
            node.output[:] = [name if o == old else o for o in node.output]
            node.input[:] = [name if i == old else i for i in node.input]
        output.name = name


def write_onnx(backbone, metadata: ModuleMetadata, out: str | os.PathLike) -> Path:
    """Converts the folded backbone to ONNX at ``out`` (written atomically); metadata goes into
    the model's ``metadata_props``."""
    import tensorflow as tf

    from medfound.models.bit import module_form
    from medfound.models.inference import fold

    tf2onnx = _require_tf2onnx()
    folded = fold(module_form(backbone))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    def features(images):
        out_ = folded(images, training=False)
        return [out_["feature_map"], out_["embedding"]]

    model, _ = tf2onnx.convert.from_function(features, input_signature=features.input_signature,
                                             opset=OPSET)
    _rename_outputs(model, OUTPUTS)
    _shift_zero_pads_before_maxpool(model)
    entry = model.metadata_props.add()
    entry.key, entry.value = "medfound_module", metadata.to_json()
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_bytes(model.SerializeToString())
    return out
