"""Contrastive pretraining runs (SimCLR, MICLe pairs): configuration (config.py), input
pipeline (pipeline.py), networks (model.py), strategies (strategy.py) and the loop (trainer.py).

    from medfound.pretrain import PretrainConfig, pretrain
    result = pretrain(PretrainConfig(data="images/", out_dir="runs/cxr", init="bit-m:BiT-M-R50x1.npz"))

continues a BiT backbone on unlabeled medical images and leaves a run directory that
``medfound export`` turns into a hub module. Names are imported on first use (TensorFlow is heavy).
"""
from __future__ import annotations

import importlib

_API = {"PretrainConfig": "medfound.pretrain.config", "pretrain": "medfound.pretrain.trainer",
        "PretrainResult": "medfound.pretrain.trainer",
        "SupervisedConfig": "medfound.pretrain.supervised",
        "pretrain_supervised": "medfound.pretrain.supervised",
        "SupervisedResult": "medfound.pretrain.supervised"}
__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'medfound.pretrain' has no attribute {name!r}")
