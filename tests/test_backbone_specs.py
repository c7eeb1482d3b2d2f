"""One backbone spec grammar, one resolver: every kind of source a user names loads the same way.

Each source is a real file written here (a BiT .npz, a run folder, a bare .weights.h5, a .keras
file, a SavedModel module, a module from medfound < 0.2) with the tiny architecture, and each must
come back as a ``BiTBackbone`` carrying the same weights and the facts callers need.
"""
from __future__ import annotations

import numpy as np
import pytest

from medfound.export.exporter import ExportError, export_module
from medfound.models.bit import BiTBackbone, build_backbone
from medfound.resolve import BackboneError, load, parse_spec, spec_problem
from medfound.utils.files import sha256_file
from tests.bit_reference import bit_random_checkpoint
from tests.tiny_runs import write_tiny_run

PROBE = np.linspace(0.0, 1.0, 2 * 32 * 32 * 3, dtype=np.float32).reshape(2, 32, 32, 3)


def _embedding(model) -> np.ndarray:
    return model(PROBE, training=False)["embedding"].numpy()


@pytest.mark.parametrize("text, kind, arch, init, path", [
    ("random:tiny", "random", "tiny", None, None),
    ("random:R50x1", "random", "r50x1", None, None),
    ("bit-m:/w/BiT-M-R50x1.npz", "path", None, "bit-m", "/w/BiT-M-R50x1.npz"),
    ("bit-s:r50x1:/w/x.npz", "path", "r50x1", "bit-s", "/w/x.npz"),
    ("r152x2:/w/backbone.weights.h5", "path", "r152x2", None, "/w/backbone.weights.h5"),
    ("bit:r50x1:/w/x.npz", "path", "r50x1", None, "/w/x.npz"),  # the 0.2 spelling still works
    ("file:///w/cxr-50x1-remedis-m", "path", None, None, "/w/cxr-50x1-remedis-m"),
    ("/data/a:b/module", "path", None, None, "/data/a:b/module"),  # ':' in a path is no prefix
    ("cxr-50x1-remedis-m", "path", None, None, "cxr-50x1-remedis-m"),
])
def test_the_grammar(text, kind, arch, init, path):
    spec = parse_spec(text)
    assert (spec.kind, spec.arch, spec.init, spec.path) == (kind, arch, init, path)


@pytest.mark.parametrize("text, message", [
    ("https://example.org/cxr-50x1-remedis-m.tar.gz", "downloads nothing"),
    ("random:", "needs an architecture"),
    ("random:r49x7", "unknown architecture"),
    ("bit-m:", "expected 'bit-m:PATH'"),
    ("bit-m:random:tiny", "expected 'bit-m:PATH'"),
    ("", "empty backbone spec"),
])
def test_bad_specs_say_what_is_wrong(text, message):
    with pytest.raises(BackboneError, match=message):
        parse_spec(text)


def test_random_init_is_repeatable_with_a_seed():
    a, b = load("random:tiny", seed=3), load("random:tiny", seed=3)
    assert isinstance(a, BiTBackbone) and a.source.format == "random"
    assert (a.source.arch, a.source.embedding_dim, a.source.init) == ("tiny", 1024, "random")
    np.testing.assert_array_equal(_embedding(a), _embedding(b))
    assert not np.array_equal(_embedding(a), _embedding(load("random:tiny", seed=4)))


def test_bit_npz_architecture_from_its_arrays_and_init_from_the_prefix(tmp_path):
    npz = tmp_path / "my-bit-checkpoint.npz"
    np.savez(npz, **bit_random_checkpoint((1, 1, 1, 1), 0.5, seed=1))
    model = load(f"bit-m:{npz}")
    source = model.source
    assert (source.format, source.arch, source.init) == ("bit-npz", "tiny", "bit-m")
    assert source.sha256 == sha256_file(npz)
    reference = build_backbone("tiny")
    from medfound.models.bit_weights import load_bit_weights

    load_bit_weights(reference, npz)
    np.testing.assert_array_equal(_embedding(model), _embedding(reference))
    with pytest.raises(BackboneError, match="you gave architecture 'r50x1'"):
        load(f"bit-m:r50x1:{npz}")


def test_run_folder_weights_file_keras_and_module_give_the_same_backbone(tmp_path):
    written = write_tiny_run(tmp_path / "run", seed=5, modality="cxr", init="bit-m", steps=1)
    want = _embedding(written)
    run = load(str(tmp_path / "run"))
    assert (run.source.format, run.source.init, run.source.modality) == ("run", "bit-m", "cxr")
    assert run.source.run.steps == 1
    np.testing.assert_array_equal(_embedding(run), want)

    weights = tmp_path / "run" / "backbone.weights.h5"
    with pytest.raises(BackboneError, match="does not say its architecture; give it as ARCH:"):
        load(str(weights))
    bare = load(f"tiny:{weights}")
    assert bare.source.format == "weights" and bare.source.sha256 == sha256_file(weights)
    np.testing.assert_array_equal(_embedding(bare), want)
    with pytest.raises(BackboneError, match="does not fit a small backbone"):
        load(f"small:{weights}")

    keras_file = export_module(tmp_path / "run", tmp_path / "m.keras", fmt="keras",
                               name="test-cxr-tiny", modality="cxr")
    as_keras = load(str(keras_file))
    assert as_keras.source.format == "keras" and as_keras.source.name == "test-cxr-tiny"
    np.testing.assert_allclose(_embedding(as_keras), want, rtol=1e-5, atol=1e-6)

    module = export_module(tmp_path / "run", tmp_path / "test-cxr-tiny", name="test-cxr-tiny")
    as_module = load(f"file://{module}")
    assert as_module.source.format == "medfound"
    assert as_module.source.sha256 == sha256_file(module / "fingerprint.pb")
    assert as_module.source.input_size == 448 and as_module.source.init == "bit-m"
    np.testing.assert_allclose(_embedding(as_module), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(BackboneError, match="initialisation 'bit-s'"):
        load(f"bit-s:{module}")


def test_export_from_an_in_memory_model(tmp_path):
    model = load("random:tiny", seed=7)
    module = export_module(model, tmp_path / "mine.keras", name="hospital-cxr-tiny",
                           modality="cxr", fmt="keras")
    back = load(str(module))
    assert back.source.name == "hospital-cxr-tiny" and back.source.init == "random"
    np.testing.assert_allclose(_embedding(back), _embedding(model), rtol=1e-4, atol=1e-5)
    # A model built by hand (no source) exports too; what it does not record must be said.
    with pytest.raises(ExportError, match="modality"):
        export_module(build_backbone("tiny"), tmp_path / "other.keras", name="hospital-tiny-2",
                      fmt="keras")


def test_legacy_modules_load_by_name_not_by_position(tmp_path):
    from tests.legacy_v1_module import write_legacy_module

    old = build_backbone("tiny")
    path = write_legacy_module(old, tmp_path / "legacy-tiny", reverse_variables=True)
    loaded = load(str(path))
    assert loaded.source.format == "medfound-v1"
    # Folded kernels standardised again differ from the original by the epsilon only.
    np.testing.assert_allclose(loaded(PROBE)["pre_logits"].numpy(),
                               old(PROBE)["pre_logits"].numpy(), rtol=1e-3, atol=1e-4)


def test_configs_refuse_missing_sources_before_any_work(tmp_path):
    assert spec_problem("random:tiny") is None
    assert "not found: " + str(tmp_path / "no.npz") in spec_problem(f"bit-m:{tmp_path}/no.npz")
    assert "module 'cxr-50x1-remedis-m' not found" in spec_problem("cxr-50x1-remedis-m")
