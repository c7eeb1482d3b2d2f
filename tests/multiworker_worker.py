"""One worker of the multi-worker pretraining test: run by tests/test_pretrain_distributed.py.

Usage: python multiworker_worker.py TASK_INDEX PORT0,PORT1 DATA OUT_DIR WEIGHTS_OUT
TF_CONFIG is set here, before TensorFlow starts, as a cluster launcher would set it.
"""
import json
import os
import sys

task, ports, data, out_dir, weights_out = sys.argv[1:6]
os.environ["TF_CONFIG"] = json.dumps({
    "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports.split(",")]},
    "task": {"type": "worker", "index": int(task)},
})
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from medfound.pretrain import PretrainConfig, pretrain  # noqa: E402
from medfound.pretrain.strategy import make_strategy  # noqa: E402

strategy = make_strategy("multiworker")
config = PretrainConfig(data=data, out_dir=out_dir, arch="tiny", image_size=32, batch_size=8,
                        steps=3, log_every=1, checkpoint_every=2, preview_images=0,
                        strategy="multiworker", seed=3)
result = pretrain(config, strategy=strategy, verbose=False)
# Each worker saves the weights it holds, so the test can compare the workers.
result.backbone.save_weights(weights_out)
print(json.dumps({"task": task, "steps": result.steps, "replicas": strategy.num_replicas_in_sync}))
