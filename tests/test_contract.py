"""The input contract travels with every artifact, from medfound.contract alone: the SavedModel's
metadata asset, the .keras member, the ONNX metadata, the timm pretrained_cfg and the cards."""
from __future__ import annotations

import json

import pytest

from medfound.contract import input_contract
from medfound.export.exporter import export_module
from medfound.formats.metadata import read_metadata
from tests.tiny_runs import write_tiny_run


@pytest.mark.parametrize("modality", ["cxr", "path"])
def test_every_format_carries_the_same_contract(tmp_path, modality):
    name = f"{modality}-50x1-remedis-m"
    write_tiny_run(tmp_path / "run", seed=0, modality=modality, init="bit-m")
    want = input_contract(modality).to_dict()
    saved = export_module(tmp_path / "run", tmp_path / name, name=name, allow_test_arch=True)
    keras_file = export_module(tmp_path / "run", tmp_path / "k.keras", name=name, fmt="keras",
                               allow_test_arch=True)
    for path in (saved, keras_file):
        written = json.loads(json.dumps(read_metadata(path).input_contract.to_dict()))
        assert written == want, path
        raw = json.loads((saved / "assets" / "medfound_module.json").read_text())
        assert raw["input_contract"] == want  # readable without medfound
    assert want["input_size"] == {"cxr": 448, "path": 224}[modality]
    assert (want["mpp"], want["tile_size"]) == ((0.5, 224) if modality == "path" else (None, None))
    onnx = pytest.importorskip("onnx", reason="onnx extra not installed (CI installs it)")
    onnx_file = export_module(tmp_path / "run", tmp_path / "m.onnx", name=name, fmt="onnx",
                              allow_test_arch=True)
    props = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    assert json.loads(props["medfound_input_contract"]) == want


def test_cards_state_the_contract(tmp_path):
    """The module card (publish) and the timm card print the contract's own lines."""
    from medfound.export.model_card import render_module_card

    write_tiny_run(tmp_path / "run", seed=0, modality="path", init="bit-m")
    saved = export_module(tmp_path / "run", tmp_path / "m", name="path-50x1-remedis-m",
                          allow_test_arch=True)
    meta = read_metadata(saved)
    card = render_module_card(meta, archive="m.tar.gz", sha256="0" * 64,
                              probe={"size": 64, "norm": 1.0, "mean": 0.0}, release_card="")
    for line in input_contract("path").card_lines():
        assert line in card
    assert "0.5 um/px" in card and "mean [0.5, 0.5, 0.5]" in card
