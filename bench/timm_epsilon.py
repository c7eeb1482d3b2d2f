"""What timm's weight-standardisation epsilon (1e-8; BiT uses 1e-10) does to a medfound backbone.

For each architecture, a Keras-initialised backbone (kernel variances as training starts them,
~2/fan_in, where an epsilon matters most) is written as a timm folder twice: with standardised
(folded) kernels, as ``medfound export --format timm`` writes them, and with raw kernels. timm's
``resnetv2_*_bit`` runs both in a separate PyTorch process; the report gives the relative error of
each raw block4 map against medfound's own (TensorFlow backend) on the same images.

    python bench/timm_epsilon.py --archs r50x1,r152x2 --size 224 --batch 2
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.common, run as a script

TORCH_SIDE = """
import sys, numpy as np, timm, torch
folder, images, out = sys.argv[1:]
model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
x = torch.from_numpy((np.load(images).astype("float32") / 255 - 0.5) / 0.5).permute(0, 3, 1, 2)
with torch.no_grad():
    (m,) = model.forward_intermediates(x, indices=1, norm=False, intermediates_only=True)
np.save(out, m.permute(0, 2, 3, 1).numpy())
"""


def timm_map(folder: Path, images: Path, out: Path) -> np.ndarray:
    """timm's raw block4 map of the folder, computed in a process without TensorFlow."""
    subprocess.run([sys.executable, "-c", TORCH_SIDE, str(folder), str(images), str(out)],
                   check=True)
    return np.load(out)


def measure(arch: str, size: int, batch: int, scratch: Path) -> dict:
    import keras

    from medfound.export.exporter import build_metadata, run_record, resolve_spec, ExportOptions
    from medfound.export.timm_export import write_timm
    from medfound.resolve import load

    keras.utils.set_random_seed(0)
    backbone = load(f"random:{arch}")
    options = ExportOptions(name=f"eps-{arch}", modality="path")
    run = run_record(backbone, options)
    meta = build_metadata(resolve_spec(run, backbone, options), run, backbone)
    images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    np.save(scratch / "images.npy", images)
    want = backbone(images.astype("float32") / 255)["feature_map"].numpy()
    scale = float(np.abs(want).max())
    nudged = np.nextafter(images.astype("float32") / 255, np.float32(2))
    row = {"arch": arch, "size": size, "batch": batch,
           # medfound against itself with every input moved by one float32 ulp: the floor
           "one_ulp_floor": float(np.abs(backbone(nudged)["feature_map"].numpy() - want).max()
                                  / scale)}
    maps = {}
    for form, fold in (("folded", True), ("raw", False)):
        folder = write_timm(backbone, meta, scratch / f"{arch}-{form}", fold=fold)
        maps[form] = timm_map(folder, scratch / "images.npy", scratch / f"{arch}-{form}.npy")
        row[f"{form}_relative_error"] = float(np.abs(maps[form] - want).max() / scale)
    # Both in timm, same kernels' maths and order: what the epsilon alone changes.
    row["raw_vs_folded_in_timm"] = float(np.abs(maps["raw"] - maps["folded"]).max() / scale)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="r50x1,r152x2")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--out", default="bench/reports/timm_epsilon.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        rows = [measure(a, args.size, args.batch, Path(scratch)) for a in args.archs.split(",")]
    from bench.common import machine_info

    report = {"command": "python " + " ".join(sys.argv), "machine": machine_info(), "rows": rows,
              "note": "relative error = max |timm - medfound| / max |medfound| of the raw block4 map"}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
