"""Issue 25, class 1: every command that writes owns what it writes (medfound.utils.ownership).

A user's file or folder under an output's name is refused with one line naming it, exit 2, and
nothing of the user's changes; ``--overwrite`` replaces only medfound's own output; publish
finds a key it cannot sign with before it rewrites the release.
"""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfound.cli.main import main
from tests.test_hostile_cli import Case, assert_refused, run_cli, snapshot
from tests.tiny_runs import export_tiny_module, write_tiny_run

NAME = "cxr-50x1-remedis-s"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A tiny module, images, labels, a published release, and users' files under output names."""
    root = tmp_path_factory.mktemp("owners")
    export_tiny_module(root, "module", modality="cxr", init="bit-s")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(
            root / "images" / f"{i}.png")
    splits = {f"{s}_{k}": v for s in ("train", "val", "test")
              for k, v in (("images", rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)),
                           ("labels", np.array([[0], [1], [0], [1]])))}
    np.savez(root / "labeled.npz", **splits)
    # Users' files where embed would put its sidecars and outputs.
    (root / "emb.parts").mkdir()
    (root / "emb.parts" / "thesis.tex").write_text(r"\chapter{}")
    (root / "tab.failures.csv").write_text("patient,diagnosis\n1,flu\n")
    np.savez(root / "mine.npz", weights=np.arange(4))
    # A user's folder, and a finished fine-tuning run (marker and metrics).
    (root / "notes").mkdir()
    for name in ("config.json", "metrics.json", "model.keras"):
        (root / "notes" / name).write_text("the user's own " + name)
    (root / "ftrun").mkdir()
    (root / "ftrun" / ".medfound-output.json").write_text('{"command": "medfound finetune"}')
    (root / "ftrun" / "metrics.json").write_text("{}")
    # export targets: a user's .keras and .onnx, and a module folder with the user's notes in it.
    with zipfile.ZipFile(root / "mine.keras", "w") as zf:
        zf.writestr("config.json", "{}")
    (root / "mine.onnx").write_bytes(b"not medfound's")
    shutil.copytree(root / "module", root / "annotated")
    (root / "annotated" / "NOTES.md").write_text("my notes on this module")
    # A published release, and a key that is a folder.
    release = root / "release"
    write_tiny_run(root / "rrun", seed=5, modality="cxr", init="bit-s", steps=3, data="x")
    release.mkdir()
    from medfound.export.exporter import export_module

    export_module(root / "rrun", release / NAME, name=NAME, allow_test_arch=True)
    (release / "MODEL_CARD.md").write_text("# release\n")
    assert main(["publish", str(release), "--allow-test-modules"]) == 0
    (root / "keydir").mkdir()
    # An unpublished release folder holding the user's own file under a published name.
    (root / "draft").mkdir()
    shutil.copytree(release / NAME, root / "draft" / NAME)
    (root / "draft" / "MODEL_CARD.md").write_text("# draft\n")
    (root / "draft" / f"{NAME}.md").write_text("my own notes on the module")
    (root / "foreign_manifest").mkdir()
    shutil.copytree(release / NAME, root / "foreign_manifest" / NAME)
    (root / "foreign_manifest" / "MODEL_CARD.md").write_text("# draft\n")
    (root / "foreign_manifest" / "manifest.json").write_text('{"my": "inventory"}')
    return root


EMBED = "embed --module {w}/module --input {w}/images --image-size 32"
EXPORT = f"export {{w}}/module --name {NAME} --allow-test-arch"
FINETUNE = "finetune --module {w}/module --task medmnist --data {w}/labeled.npz --epochs 1 --quiet"
CASES = {
    "embed-foreign-parts-folder": Case(f"{EMBED} --out {{w}}/emb.npz",
                                       ["parts folder {w}/emb.parts is not empty", "thesis.tex"]),
    "embed-foreign-failures-csv": Case(f"{EMBED} --out {{w}}/tab.npz",
                                       ["{w}/tab.failures.csv exists and was not written"]),
    "embed-foreign-output-overwrite": Case(f"{EMBED} --out {{w}}/mine.npz --overwrite",
                                           ["{w}/mine.npz exists and was not written by "
                                            "medfound embed"]),
    "finetune-foreign-folder": Case(f"{FINETUNE} --out {{w}}/notes",
                                    ["--out {w}/notes is not empty and was not written by "
                                     "medfound finetune", "config.json"]),
    "finetune-foreign-folder-overwrite": Case(f"{FINETUNE} --out {{w}}/notes --overwrite",
                                              ["--out {w}/notes is not empty"]),
    "finetune-finished-run": Case(f"{FINETUNE} --out {{w}}/ftrun",
                                  ["earlier output of medfound finetune; pass --overwrite"]),
    "export-keras-foreign-file": Case(f"{EXPORT} --format keras --out {{w}}/mine.keras "
                                      "--overwrite", ["{w}/mine.keras exists and was not written"]),
    "export-onnx-foreign-file": Case(f"{EXPORT} --format onnx --out {{w}}/mine.onnx --overwrite",
                                     ["{w}/mine.onnx exists and was not written"]),
    "export-module-with-users-notes": Case(f"{EXPORT} --out {{w}}/annotated --overwrite",
                                           ["--out {w}/annotated is not empty and was not "
                                            "written by medfound export", "NOTES.md"]),
    "export-own-module-without-overwrite": Case(f"{EXPORT} --out {{w}}/module",
                                                ["earlier output of medfound export; pass "
                                                 "--overwrite"]),
    "publish-sign-key-is-a-folder": Case("publish {w}/release --allow-test-modules --sign "
                                         "{w}/keydir", ["{w}/keydir: not a readable private key"]),
    "publish-sign-key-missing": Case("publish {w}/release --allow-test-modules --sign "
                                     "{w}/nokey", ["{w}/nokey: not a readable private key"]),
    "publish-over-users-card": Case("publish {w}/draft --allow-test-modules",
                                    [f"{{w}}/draft/{NAME}.md: exists and was not written by "
                                     "medfound publish"]),
    "publish-over-users-manifest": Case("publish {w}/foreign_manifest --allow-test-modules",
                                        ["{w}/foreign_manifest/manifest.json: exists and is not "
                                         "a medfound release manifest"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_users_file_under_an_output_name_is_refused_and_kept(world, name, capsys):
    assert_refused(world, CASES[name], capsys)


def test_publish_sign_without_ssh_keygen_rewrites_nothing(world, capsys, monkeypatch, tmp_path):
    key = tmp_path / "key"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    monkeypatch.setenv("PATH", str(tmp_path))  # no ssh-keygen on it
    assert_refused(world, Case(f"publish {{w}}/release --allow-test-modules --sign {key}",
                               ["ssh-keygen not found"]), capsys)


def test_overwrite_replaces_only_medfounds_own_output(world, tmp_path, capsys):
    """The guarded paths still work: an embed output, its failures list and a .keras export are
    replaced with --overwrite; the parts folder goes, a user's file put in it stays."""
    out = tmp_path / "e.npz"
    embed = [a.replace("{w}", str(world)) for a in EMBED.split()]
    assert run_cli([*embed, "--out", str(out)], capsys)[0] == 0
    assert not (tmp_path / "e.parts").exists() and (tmp_path / "e.failures.csv").is_file()
    assert run_cli([*embed, "--out", str(out)], capsys)[0] == 2
    assert run_cli([*embed, "--out", str(out), "--overwrite"], capsys)[0] == 0
    # A run stopped early keeps its parts; a user's file dropped there survives the finish.
    out2 = tmp_path / "f.npz"
    assert run_cli([*embed, "--out", str(out2), "--max-images", "1", "--batch-size", "1"],
                   capsys)[0] == 0
    (tmp_path / "f.parts" / "mine.txt").write_text("keep")
    assert run_cli([*embed, "--out", str(out2), "--batch-size", "1"], capsys)[0] == 0
    assert (tmp_path / "f.parts" / "mine.txt").read_text() == "keep"
    assert sorted(p.name for p in (tmp_path / "f.parts").iterdir()) == ["mine.txt"]
    export = [a.replace("{w}", str(world)) for a in EXPORT.split()]
    keras_out = tmp_path / "m.keras"
    assert run_cli([*export, "--format", "keras", "--out", str(keras_out)], capsys)[0] == 0
    before = snapshot(tmp_path)
    assert run_cli([*export, "--format", "keras", "--out", str(keras_out)], capsys)[0] == 2
    assert snapshot(tmp_path) == before
    assert run_cli([*export, "--format", "keras", "--out", str(keras_out), "--overwrite"],
                   capsys)[0] == 0


def test_republishing_replaces_its_own_files(world, tmp_path, capsys):
    release = tmp_path / "release"
    shutil.copytree(world / "release", release)
    manifest = json.loads((release / "manifest.json").read_text())
    assert run_cli(["publish", str(release), "--allow-test-modules"], capsys)[0] == 0
    assert set(json.loads((release / "manifest.json").read_text())["files"]) == set(manifest["files"])
