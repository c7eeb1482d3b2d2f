"""An independent NumPy BiT ResNetV2 (no medfound code): the reference the Keras model must match.

It also writes random checkpoints in the public BiT ``.npz`` key layout, spelled out here from
the BiT release rather than taken from the package.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

BASE = (64, 128, 256, 512)


def bit_random_checkpoint(units, width, num_classes=0, seed=0) -> dict[str, np.ndarray]:
    """Random weights under the public BiT key names for the given units and width."""
    rng = np.random.default_rng(seed)

    def kernel(*shape):
        return rng.normal(0.3, 1.0, size=shape).astype(np.float32)  # non-zero mean: WS matters

    def norm(prefix, ch, out):
        # Trained BiT GroupNorm scales are small; with standardised kernels they alone set the
        # activation scale, and so how much float32 rounding the 1e-4 comparison must absorb.
        out[f"{prefix}/group_norm/gamma"] = rng.uniform(0.05, 0.3, ch).astype(np.float32)
        out[f"{prefix}/group_norm/beta"] = rng.normal(0, 0.05, ch).astype(np.float32)

    w = {}
    root = int(64 * width)
    w["resnet/root_block/standardized_conv2d/kernel"] = kernel(7, 7, 3, root)
    in_ch = root
    for b, n in enumerate(units):
        mid = int(BASE[b] * width)
        for u in range(n):
            p = f"resnet/block{b + 1}/unit{u + 1:02d}"
            norm(f"{p}/a", in_ch, w)
            if u == 0:
                w[f"{p}/a/proj/standardized_conv2d/kernel"] = kernel(1, 1, in_ch, 4 * mid)
            w[f"{p}/a/standardized_conv2d/kernel"] = kernel(1, 1, in_ch, mid)
            norm(f"{p}/b", mid, w)
            w[f"{p}/b/standardized_conv2d/kernel"] = kernel(3, 3, mid, mid)
            norm(f"{p}/c", mid, w)
            w[f"{p}/c/standardized_conv2d/kernel"] = kernel(1, 1, mid, 4 * mid)
            in_ch = 4 * mid
    norm("resnet", in_ch, w)
    if num_classes:
        w["resnet/head/conv2d/kernel"] = kernel(1, 1, in_ch, num_classes) * 0.01
        w["resnet/head/conv2d/bias"] = rng.normal(0, 0.1, num_classes).astype(np.float32)
    return w


def _conv(x, k, stride=1):
    """VALID convolution, NHWC input, HWIO kernel, with weight standardisation (BiT's)."""
    k = k.astype(np.float64)
    k = (k - k.mean(axis=(0, 1, 2))) / np.sqrt(k.var(axis=(0, 1, 2)) + 1e-10)
    kh, kw = k.shape[:2]
    win = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("bhwcij,ijco->bhwo", win, k)


def _gn(x, gamma, beta, groups=32, eps=1e-5):
    b, h, w, c = x.shape
    g = x.reshape(b, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = g.var(axis=(1, 2, 4), keepdims=True)
    return ((g - mean) / np.sqrt(var + eps)).reshape(b, h, w, c) * gamma + beta


def _pad(x, p):
    return np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))


def bit_forward(w: dict[str, np.ndarray], images: np.ndarray, units) -> dict[str, np.ndarray]:
    """BiT forward pass in float64; returns every block output, the feature map and pre_logits."""
    relu = lambda t: np.maximum(t, 0)  # noqa: E731
    x = images.astype(np.float64) * 2 - 1
    x = _conv(_pad(x, 3), w["resnet/root_block/standardized_conv2d/kernel"], 2)
    x = sliding_window_view(_pad(x, 1), (3, 3), axis=(1, 2))[:, ::2, ::2].max(axis=(-1, -2))
    out = {"stem": x}
    for b, n in enumerate(units):
        for u in range(n):
            p = f"resnet/block{b + 1}/unit{u + 1:02d}"
            stride = 2 if (u == 0 and b > 0) else 1
            pre = relu(_gn(x, w[f"{p}/a/group_norm/gamma"], w[f"{p}/a/group_norm/beta"]))
            short = x
            if u == 0:
                short = _conv(pre, w[f"{p}/a/proj/standardized_conv2d/kernel"], stride)
            y = _conv(pre, w[f"{p}/a/standardized_conv2d/kernel"])
            y = relu(_gn(y, w[f"{p}/b/group_norm/gamma"], w[f"{p}/b/group_norm/beta"]))
            y = _conv(_pad(y, 1), w[f"{p}/b/standardized_conv2d/kernel"], stride)
            y = relu(_gn(y, w[f"{p}/c/group_norm/gamma"], w[f"{p}/c/group_norm/beta"]))
            x = _conv(y, w[f"{p}/c/standardized_conv2d/kernel"]) + short
        out[f"block{b + 1}"] = x
    out["feature_map"] = x  # the raw block4 map: what a REMEDIS module returns
    out["embedding"] = x.mean(axis=(1, 2))
    x = relu(_gn(x, w["resnet/group_norm/gamma"], w["resnet/group_norm/beta"]))
    out["pre_logits"] = x.mean(axis=(1, 2))
    if "resnet/head/conv2d/kernel" in w:
        k = w["resnet/head/conv2d/kernel"]
        out["logits"] = out["pre_logits"] @ k.reshape(k.shape[-2:]) + w["resnet/head/conv2d/bias"]
    return out
