"""Issue 25, classes 2 and 10 (verify): a module whose provenance check failed is never loaded or
run; a manifest naming paths outside the release, too large, too deep or not JSON is one line,
exit 2; nothing of the release changes."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import tensorflow as tf

from medfound.cli.main import main
from tests.test_hostile_cli import run_cli, snapshot
from tests.tiny_runs import write_tiny_run

NAME = "cxr-50x1-remedis-s"


def _rewrite_sums(folder: Path, changed: set[str]) -> None:
    """SHA256SUMS with the hashes of ``changed`` recomputed (a consistent forgery)."""
    lines = []
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ")
        if name in changed:
            digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        lines.append(f"{digest}  {name}\n")
    (folder / "SHA256SUMS").write_text("".join(lines))


def _planted_module(folder: Path, real: Path, marker: Path) -> None:
    """A SavedModel whose graph writes ``marker`` when called, with the real module's metadata."""

    class Planted(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, images):
            tf.io.write_file(str(marker), "the graph ran")
            return tf.zeros([tf.shape(images)[0], 2, 2, 8])

    tf.saved_model.save(Planted(), str(folder))
    shutil.copytree(real / "assets", folder / "assets", dirs_exist_ok=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("verify")
    from medfound.export.exporter import export_module

    write_tiny_run(root / "run", seed=5, modality="cxr", init="bit-s", steps=3, data="x")
    release = root / "release"
    release.mkdir()
    export_module(root / "run", release / NAME, name=NAME, allow_test_arch=True)
    (release / "MODEL_CARD.md").write_text("# release\n")
    assert main(["publish", str(release), "--allow-test-modules"]) == 0
    shutil.rmtree(release / NAME)  # what a user downloads: archives, cards, lists
    _planted_module(root / "planted", _unpacked(release, root / "real"), root / "PLANTED")
    return root


def _unpacked(release: Path, target: Path) -> Path:
    from medfound.formats.archive import safe_extract

    return safe_extract(release / f"{NAME}.tar.gz", target)


def _copy(world: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "release"
    shutil.copytree(world / "release", copy)
    return copy


def _swap_in_planted(world: Path, copy: Path) -> None:
    """The swapped, re-hashed release: the planted archive, manifest and sums made to agree."""
    from medfound.export.pack import pack_module

    pack_module(world / "planted", copy / f"{NAME}.tar.gz")
    digest = hashlib.sha256((copy / f"{NAME}.tar.gz").read_bytes()).hexdigest()
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["modules"][NAME]["sha256"] = manifest["files"][f"{NAME}.tar.gz"] = digest
    (copy / "manifest.json").write_text(json.dumps(manifest))
    _rewrite_sums(copy, {f"{NAME}.tar.gz", "manifest.json"})


def test_the_untouched_release_verifies(world, tmp_path, capsys):
    code, _ = run_cli(["verify", str(_copy(world, tmp_path))], capsys)
    assert code == 0


def test_a_swapped_rehashed_module_is_never_run(world, tmp_path, capsys):
    """The card still states the old hash: the provenance check fails, so the planted graph
    must not run (it wrote its file when verify went on to the probe)."""
    copy = _copy(world, tmp_path)
    _swap_in_planted(world, copy)
    before = snapshot(copy)
    code, lines = run_cli(["verify", str(copy)], capsys)
    assert code == 1 and lines[0] == "medfound verify: FAILED", lines
    assert any("the card does not state" in line for line in lines), lines
    assert not (world / "PLANTED").exists()
    assert snapshot(copy) == before


def _manifest_case(copy: Path, case: str) -> None:
    manifest_file = copy / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    if case == "deep":
        manifest_file.write_text("[" * 100_000 + "]" * 100_000)
    elif case == "not-json":
        manifest_file.write_text('{"format": "medfound-release", "files": ')
    elif case == "files-a-list":
        manifest["files"] = list(manifest["files"])
        manifest_file.write_text(json.dumps(manifest))
    elif case == "card-outside":
        manifest["modules"][NAME]["card"] = "../outside.md"
        manifest_file.write_text(json.dumps(manifest))
    elif case == "archive-absolute":
        manifest["modules"][NAME]["archive"] = "/etc/passwd"
        manifest_file.write_text(json.dumps(manifest))
    elif case == "layout-folder-outside":
        manifest_file.write_text(json.dumps({
            "format": "medfound-release-layout", "layout": "kaggle", "files": {},
            "modules": {NAME: {"folder": "../release", "probe": {}}}}))
    elif case == "huge":
        with open(manifest_file, "wb") as f:
            f.write(b" " * ((64 << 20) + 10) + json.dumps(manifest).encode())
    _rewrite_sums(copy, {"manifest.json"})


MANIFEST_CASES = {
    "deep": "JSON nested too deeply",
    "not-json": "not valid JSON",
    "files-a-list": "'files' is not a mapping",
    "card-outside": "card '../outside.md' is not a path inside",
    "archive-absolute": "archive '/etc/passwd' is not a path inside",
    "layout-folder-outside": "folder '../release' is not a path inside",
    "huge": "over 64 MiB",
}


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
def test_a_rehashed_hostile_manifest_is_one_line_exit_2(world, tmp_path, capsys, case):
    copy = _copy(world, tmp_path)
    _manifest_case(copy, case)
    before = snapshot(copy)
    code, lines = run_cli(["verify", str(copy)], capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"medfound verify: error: {copy}/manifest.json: "), lines[0]
    assert MANIFEST_CASES[case] in lines[0], lines[0]
    assert snapshot(copy) == before
    assert not (world / "PLANTED").exists()


def test_a_deep_manifest_that_fails_its_hash_is_a_named_problem(world, tmp_path, capsys):
    copy = _copy(world, tmp_path)
    (copy / "manifest.json").write_text("[" * 100_000)
    code, lines = run_cli(["verify", str(copy)], capsys)
    assert code == 1 and any("manifest.json: SHA-256" in line for line in lines), lines


def test_a_hostile_manifest_beside_an_archive_is_refused_by_load(world, tmp_path):
    """medfound.load of an archive reads the manifest beside it: bounded and depth-safe too."""
    from medfound.formats.locate import expected_archive_sha256

    copy = _copy(world, tmp_path)
    (copy / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        expected_archive_sha256(copy / f"{NAME}.tar.gz")
