"""ONNX export (tf2onnx) agrees with the SavedModel when run by onnxruntime."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from medfound.export.exporter import export_module
from tests.tiny_runs import write_tiny_run

onnx = pytest.importorskip("onnx", reason="onnx not installed (pip install 'medfound[onnx]')")
ort = pytest.importorskip("onnxruntime",
                          reason="onnxruntime not installed (pip install 'medfound[onnx]')")
pytest.importorskip("tf2onnx", reason="tf2onnx not installed (pip install 'medfound[onnx]')")

NAME = "path-152x2-remedis-m"


def test_onnxruntime_matches_the_savedmodel_within_1e4(tmp_path):
    write_tiny_run(tmp_path / "run", seed=11, modality="path", init="bit-m")
    saved = export_module(tmp_path / "run", tmp_path / NAME, name=NAME, allow_test_arch=True)
    path = export_module(tmp_path / "run", tmp_path / "onnx", name=NAME, fmt="onnx",
                         allow_test_arch=True)
    assert path == tmp_path / "onnx" / f"{NAME}.onnx"
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["medfound_module"])["name"] == NAME
    # Default session options: onnxruntime's graph optimiser runs, as it does for users.
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    module = tf.saved_model.load(str(saved))
    rng = np.random.RandomState(0)
    for shape in [(2, 64, 64, 3), (1, 96, 64, 3)]:
        x = rng.rand(*shape).astype(np.float32)
        assert [o.name for o in session.get_outputs()] == ["feature_map", "embedding"]
        output_0, embedding = session.run(None, {"images": x})  # positional, as clients read it
        want = module(tf.constant(x)).numpy()  # the raw block4 map
        scale = np.abs(want).max()
        np.testing.assert_allclose(output_0 / scale, want / scale, atol=1e-4)
        np.testing.assert_allclose(embedding / scale, want.mean(axis=(1, 2)) / scale, atol=1e-4)


@pytest.mark.parametrize("group_norm", ["instance_norm", "onnx"])
def test_direct_graph_is_nchw_without_checks_and_matches_the_backbone(tmp_path, group_norm):
    """Both GroupNorm forms compute the backbone's map; the graph has one transpose in and one
    out (no per-layer layout changes), no assert-like ops, and says in its metadata that it does
    not check its input."""
    from medfound.formats.metadata import ModuleMetadata
    from medfound.export.onnx_export import INPUT_CHECK_NOTE, write_onnx
    from medfound.models.bit import build_backbone, module_form

    import keras

    keras.utils.set_random_seed(5)
    backbone = module_form(build_backbone("tiny"))
    meta = ModuleMetadata(name="bench-tiny", arch="tiny", modality="path", input_size=224,
                          embedding_dim=backbone.embedding_dim, init="random", units=[1, 1, 1, 1],
                          width=0.5, test_only=True)
    path = write_onnx(backbone, meta, tmp_path / "m.onnx", group_norm=group_norm)
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["medfound_input_check"] == INPUT_CHECK_NOTE
    assert props["medfound_group_norm"] == group_norm
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Transpose") == 2
    assert not {"Assert", "If", "Loop", "Where", "ReduceMin", "ReduceMax", "IsNaN"} & set(ops)
    assert ops.count("GroupNormalization" if group_norm == "onnx" else "InstanceNormalization") \
        == 3 * 4  # three norms per unit, one unit per block
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.RandomState(1).rand(2, 64, 96, 3).astype(np.float32)
    feature_map, embedding = session.run(None, {"images": x})
    want = backbone(x, training=False)
    scale = np.abs(want["block4"].numpy()).max()
    np.testing.assert_allclose(feature_map / scale, want["block4"].numpy() / scale, atol=1e-4)
    np.testing.assert_allclose(embedding / scale, want["embedding"].numpy() / scale, atol=1e-4)
