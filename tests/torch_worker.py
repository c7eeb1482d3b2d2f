"""Runs the PyTorch side of tests/test_timm.py in a process without TensorFlow, as a PyTorch
user's script would run (TensorFlow and triton, which torch imports, crash when loaded into one
process). ``python tests/torch_worker.py JOB FOLDER IMAGES.npy OUT.npz``; images are uint8 NHWC.

Jobs: ``timm`` (raw block4 via forward_intermediates, and model(x) after the card's one line),
``trident`` (TRIDENT's custom patch-encoder recipe), ``eva`` (kaiko-ai eva's TimmModel wrapper).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image


def load(folder: str):
    """timm's documented way in: create_model on the folder, transforms from its config."""
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    return model, transform


def card_line(folder: str) -> str:
    """The one line the folder's card gives for the REMEDIS embedding, as a user copies it."""
    (line,) = [l for l in (Path(folder) / "README.md").read_text().splitlines()
               if "torch.nn.Identity()" in l]
    return line


def batch(transform, images: np.ndarray) -> torch.Tensor:
    return torch.stack([transform(Image.fromarray(image)) for image in images])


def job_timm(folder: str, images: np.ndarray) -> dict:
    model, transform = load(folder)
    x = batch(transform, images)
    with torch.no_grad():
        (block4,) = model.forward_intermediates(x, indices=1, norm=False, intermediates_only=True)
        exec(card_line(folder), {"model": model, "torch": torch})
        embedding = model(x)
    return {"block4": block4.permute(0, 2, 3, 1).numpy(), "embedding": embedding.numpy()}


def job_trident(folder: str, images: np.ndarray) -> dict:
    """TRIDENT's CustomInferenceEncoder: a timm model, its eval transforms, float32, and the
    model called on the transformed batch under inference mode; what it returns is stored."""
    model, transform = load(folder)
    exec(card_line(folder), {"model": model, "torch": torch})
    with torch.inference_mode():
        features = model(batch(transform, images).to(torch.float32))
    return {"embedding": features.numpy()}


def job_eva(folder: str, images: np.ndarray) -> dict:
    """eva's TimmModel on the folder: the last stage's raw map, pooled by the output transform."""
    from eva.vision.models.wrappers import TimmModel

    encoder = TimmModel(model_name=f"local-dir:{folder}", out_indices=(4,),
                        transforms=lambda maps: maps[-1].mean(dim=(2, 3)))
    _, transform = load(folder)
    with torch.no_grad():
        features = encoder(batch(transform, images))
    return {"embedding": features.numpy()}


if __name__ == "__main__":
    job, folder, images, out = sys.argv[1:]
    result = {"timm": job_timm, "trident": job_trident, "eva": job_eva}[job](folder, np.load(images))
    np.savez(out, **result)
    print(json.dumps({"tensorflow": "tensorflow" in sys.modules, "timm": timm.__version__}))
