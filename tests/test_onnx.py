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
