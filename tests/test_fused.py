"""One-pass GroupNorm statistics and XLA-compiled inference: the same outputs as the defaults.

One-pass GroupNorm (variance as E[x^2] - E[x]^2) must meet the NumPy BiT reference at the
two-pass tolerances; an exported module whose forward pass is XLA-compiled must give the
default module's map, keep refusing bad inputs (XLA drops in-graph asserts, so the checks stay
outside the compiled function) and say so in its metadata; ``embed --xla`` likewise.
"""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import medfound
from medfound.cli.main import main
from medfound.formats.metadata import read_metadata
from medfound.models.configs import GN_STATISTICS
from medfound.models.layers import GroupNormalization, group_norm_nhwc
from tests.bit_reference import bit_forward, bit_random_checkpoint
from tests.tiny_runs import write_tiny_run

UNITS = (2, 1, 1, 1)
NAME = "cxr-50x1-remedis-m"


def relative_error(got, want) -> float:
    want = np.asarray(want)
    return float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())


def test_one_pass_group_norm_meets_the_reference_at_the_two_pass_tolerance(tmp_path):
    weights = bit_random_checkpoint(UNITS, 0.5, num_classes=5, seed=1)
    np.savez(tmp_path / "BiT-M-tiny.npz", **weights)
    images = np.random.default_rng(2).uniform(0, 1, (2, 64, 72, 3)).astype(np.float32)
    model = medfound.build_backbone("tiny", units=UNITS, num_classes=5,
                                    group_norm_statistics="one_pass")
    medfound.load_bit_weights(model, tmp_path / "BiT-M-tiny.npz", include_head=True)
    expected = bit_forward(weights, images, UNITS)
    got = model(images)
    for key, ref in expected.items():  # test_bit_backbone's tolerances for the two-pass form
        np.testing.assert_allclose(np.asarray(got[key]), ref, atol=1e-4, rtol=1e-5, err_msg=key)
    # The choice survives .keras; the default form's config stays as older releases wrote it.
    model.save(tmp_path / "one.keras")
    restored = keras.saving.load_model(tmp_path / "one.keras")
    assert restored.group_norm_statistics == "one_pass"
    assert {l.statistics for l in restored.layers if isinstance(l, GroupNormalization)} \
        == {"one_pass"}
    assert "group_norm_statistics" not in medfound.build_backbone("tiny").get_config()


def test_one_pass_equals_two_pass_on_shifted_maps_and_rejects_unknown_names():
    """Maps whose mean is several standard deviations from zero (residual streams): the one-pass
    variance stays within float32 reach of the two-pass one."""
    rng = np.random.default_rng(0)
    x = (rng.normal(0, 1, (2, 14, 14, 64)) + rng.normal(0, 4, (1, 1, 1, 64))).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, 64).astype(np.float32)
    beta = rng.normal(0, 0.1, 64).astype(np.float32)
    two = group_norm_nhwc(tf.constant(x), gamma, beta)
    one = group_norm_nhwc(tf.constant(x), gamma, beta, statistics="one_pass")
    assert relative_error(one, two) < 1e-5
    with pytest.raises(ValueError, match="one_pass"):
        group_norm_nhwc(tf.constant(x), gamma, beta, statistics="onepass")
    # Where float32 cancels (mean 3000 standard deviations out) the two differ, so the layer
    # really computes what it is told: the limit of one pass, and why two_pass is the default.
    far = (rng.normal(0, 1, (1, 8, 8, 32)) + 3e3).astype(np.float32)
    layers = {s: GroupNormalization(groups=32, epsilon=1e-5, statistics=s) for s in GN_STATISTICS}
    assert relative_error(layers["one_pass"](far), layers["two_pass"](far)) > 1e-2


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    """A tiny run exported twice through the CLI: the default form and with --xla --one-pass."""
    root = tmp_path_factory.mktemp("fused")
    write_tiny_run(root / "run", seed=4, modality="cxr", init="bit-m", steps=1)
    out = {}
    for form, extra in (("plain", []), ("xla", ["--xla", "--group-norm-statistics", "one_pass"])):
        out[form] = root / form
        assert main(["export", str(root / "run"), "--name", NAME, "--out", str(out[form]),
                     "--allow-test-arch", *extra]) == 0
    return out


def test_xla_module_gives_the_default_map_and_records_it(modules):
    import tensorflow_hub as hub

    plain, xla = read_metadata(modules["plain"]), read_metadata(modules["xla"])
    assert (plain.jit_compile, plain.group_norm_statistics) == (False, "two_pass")
    assert (xla.jit_compile, xla.group_norm_statistics) == (True, "one_pass")
    # The forward pass really is a must-compile XLA function in the saved graph.
    assert b"_XlaMustCompile" in (modules["xla"] / "saved_model.pb").read_bytes()
    assert b"_XlaMustCompile" not in (modules["plain"] / "saved_model.pb").read_bytes()
    images = np.random.RandomState(0).rand(2, 64, 64, 3).astype(np.float32)
    want = hub.load(str(modules["plain"]))(images).numpy()
    module = hub.load(str(modules["xla"]))
    assert relative_error(module(images), want) < 1e-4  # MAP_TOLERANCE of the backend tests
    served = module.signatures["serving_default"](images=tf.constant(images))["output_1"]
    assert relative_error(served, want) < 1e-4
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        module(np.full((1, 64, 64, 3), np.nan, np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="far above 1"):
        module(images * 255)


def test_embedder_under_xla_gives_the_default_embedding_and_keeps_its_checks(modules):
    from medfound.embed import ModuleEmbedder
    from medfound.models.input_check import ImageInputError

    images = np.random.RandomState(1).rand(3, 64, 64, 3).astype(np.float32)
    want = ModuleEmbedder(modules["plain"])(images).numpy()
    fast = ModuleEmbedder(modules["plain"], xla=True, group_norm_statistics="one_pass")
    assert relative_error(fast(images), want) < 1e-4
    assert fast.xla and fast._model.group_norm_statistics == "one_pass"  # noqa: SLF001
    with pytest.raises((tf.errors.InvalidArgumentError, ImageInputError), match="reach"):
        fast(images * 255)
