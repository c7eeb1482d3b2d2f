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
        feature_map, pre_logits = session.run(["feature_map", "pre_logits"], {"images": x})
        want = module.signatures["serving_default"](images=tf.constant(x))
        np.testing.assert_allclose(feature_map, want["feature_map"].numpy(), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(pre_logits, want["pre_logits"].numpy(), atol=1e-4, rtol=1e-4)
