"""Multi-worker pretraining: two worker processes on localhost (TF_CONFIG) end identical."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np

import medfound

WORKER = Path(__file__).with_name("multiworker_worker.py")


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_end_with_identical_weights(shared_data, tmp_path):
    ports = ",".join(map(str, _free_ports(2)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    procs = [subprocess.Popen(
        [sys.executable, str(WORKER), str(task), ports, str(shared_data / "pneumoniamnist.npz"),
         str(tmp_path / "run"), str(tmp_path / f"worker{task}.weights.h5")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for task in (0, 1)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert [r["steps"] for r in reports] == [3, 3]
    assert [r["replicas"] for r in reports] == [2, 2]
    weights = []
    for task in (0, 1):
        model = medfound.build_backbone("tiny")
        model.load_weights(tmp_path / f"worker{task}.weights.h5")
        weights.append(model.get_weights())
    keras.utils.set_random_seed(3)  # the workers' seed: the same initial weights as theirs
    initial = medfound.build_backbone("tiny").get_weights()
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(weights[0], initial))
    # Only the chief's outputs remain in the run directory.
    assert (tmp_path / "run" / "backbone.weights.h5").exists()
    assert not list((tmp_path / "run").glob(".worker-*"))
