"""Full-size PhysioNet fidelity: medfound's export against a file built like the real releases.

For each architecture, one random BiT-format ``.npz`` is written; from it, (a) the PhysioNet-style
fixture of ``tests/physionet_format.py`` (a tf-keras ``bit_tf2``-style model saved with
``tf.saved_model.save``, sharing no code with medfound) and (b) ``medfound export``'s hub
module. Both are reloaded with ``tf.saved_model.load`` and called on the same [0, 1] images at
each size. Reported per (arch, size):

- ``rel_error``: ||ours - fixture|| / ||fixture|| of the block4 maps;
- ``noise_floor``: how far the fixture itself moves when every input pixel moves by one float32
  ulp (the rounding noise any two correct float32 implementations differ by, which random
  weights amplify); ``error_vs_floor`` is their ratio (order 1: equal up to rounding);
- ``speed_vs_fixture``: fixture time / medfound time per call, alternating repetitions (> 1:
  medfound's module is faster).

The unit test (tests/test_physionet_format.py) runs r50x1 as files and r152x2 in memory; this
script is the full-size file round trip of both, too slow for CI on two cores (~5 min for r152x2).

    python bench/physionet_parity.py              # r50x1 and r152x2 at 224 and 448
    python bench/physionet_parity.py --tiny       # smoke test: seconds
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (alternating, base_parser, machine_info,  # noqa: E402
                          parse_with_defaults, report, speed_ratio)

DEFAULTS = {"archs": "r50x1,r152x2", "sizes": "224,448", "batch": 1}
TINY = {"archs": "tiny", "sizes": "32", "batch": 1}
COLUMNS = ("arch", "size", "rel_error", "noise_floor", "error_vs_floor", "speed_vs_fixture",
           "fixture_s", "medfound_s")


def relative_error(a, b) -> float:
    """||a - b|| / ||b|| in float64."""
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def build_pair(arch: str, root: Path) -> tuple[Path, Path, float]:
    """Writes the .npz, the fixture file and medfound's export of it; returns both paths and
    the seconds it took."""
    import numpy as np

    from medfound.export.exporter import export_module
    from medfound.models.configs import get_arch
    from tests.bit_reference import bit_random_checkpoint
    from tests.physionet_format import write_physionet_module

    spec = get_arch(arch)
    start = time.perf_counter()
    npz = root / f"{arch}.npz"
    np.savez(npz, **bit_random_checkpoint(tuple(spec.units), spec.width, seed=6))
    name = "cxr-152x2-remedis-m" if arch == "r152x2" else "cxr-50x1-remedis-m"
    fixture = write_physionet_module(npz, root / "physionet" / name, tuple(spec.units), spec.width)
    ours = export_module(npz, root / "medfound" / name, name=name, arch=arch, init="bit-m",
                         allow_test_arch=arch == "tiny")
    return fixture, ours, time.perf_counter() - start


def compare(fixture_path: Path, ours_path: Path, arch: str, sizes: list[int], batch: int,
            repeats: int, warmup: int) -> list[dict]:
    """One row per size: error, noise floor and speed of medfound's module vs the fixture."""
    import numpy as np
    import tensorflow as tf

    fixture, ours = tf.saved_model.load(str(fixture_path)), tf.saved_model.load(str(ours_path))
    rows = []
    for size in sizes:
        x = np.random.RandomState(size).rand(batch, size, size, 3).astype(np.float32)
        want = fixture(x).numpy()
        got = ours(x).numpy()
        floor = relative_error(fixture(np.nextafter(x, np.float32(2))).numpy(), want)
        error = relative_error(got, want)
        times = alternating({"fixture": lambda: fixture(x).numpy(),
                             "medfound": lambda: ours(x).numpy()},
                            repeats=repeats, warmup=warmup)
        rows.append({"arch": arch, "size": size, "rel_error": error, "noise_floor": floor,
                     "error_vs_floor": error / floor if floor else float("inf"),
                     "speed_vs_fixture": speed_ratio(times["medfound"], times["fixture"]),
                     "fixture_s": float(np.median(times["fixture"])),
                     "medfound_s": float(np.median(times["medfound"])),
                     "shape": list(got.shape)})
        print(f"{arch} @ {size}: relative error {error:.2e}, one-ulp floor {floor:.2e}",
              flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], "bench/results/physionet_parity.json")
    parser.add_argument("--archs", default=None, help="comma-separated BiT architectures")
    parser.add_argument("--sizes", default=None, help="comma-separated square image sizes")
    parser.add_argument("--batch", type=int, default=None, help="images per call")
    args = parse_with_defaults(parser, argv, DEFAULTS, TINY)
    rows, build_seconds = [], {}
    for arch in args.archs.split(","):
        with tempfile.TemporaryDirectory(prefix=f"parity-{arch}-") as tmp:
            fixture, ours, seconds = build_pair(arch, Path(tmp))
            build_seconds[arch] = seconds
            rows += compare(fixture, ours, arch, [int(s) for s in args.sizes.split(",")],
                            args.batch, args.repeats, args.warmup)
    command = "python bench/physionet_parity.py " + " ".join(argv if argv is not None
                                                              else sys.argv[1:])
    payload = {"machine": machine_info(), "command": command.strip(),
               "baseline": "PhysioNet-style fixture (tests/physionet_format.py), same weights",
               "rows": rows, "build_seconds": build_seconds}
    report(rows, COLUMNS, args.json, payload)
    return payload


if __name__ == "__main__":
    main()
