"""Publishing a release, hub.load over HTTP, verify, and tar-slip-proof unpacking."""
from __future__ import annotations

import functools
import hashlib
import http.server
import importlib.util
import io
import json
import shutil
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from medfound.cli.main import main
from medfound.cli import publish as publish_cli
from medfound.cli import verify as verify_cli
from medfound.formats.archive import UnsafeArchiveError, safe_extract
from medfound.resolve import load
from medfound.formats.metadata import read_metadata
from medfound.export.publish import PublishError, probe_image, publish
from medfound.export.verify import VerifyError, verify
from medfound.models.bit import BiTBackbone
from tests.tiny_runs import write_tiny_run

NAME = "cxr-50x1-remedis-s"
REPO = Path(__file__).resolve().parents[1]


def _import_make_release():
    """export/make_release.py is a script, not a package module: import it by path."""
    script = REPO / "export" / "make_release.py"
    spec = importlib.util.spec_from_file_location("make_release", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_release


make_release = _import_make_release()


def cli(module, argv):
    """Runs the subcommand that ``module`` defines through the real `medfound` entry point."""
    return main([module.__name__.rsplit(".", 1)[-1], *argv])


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("publish")
    write_tiny_run(root / "run", seed=5, modality="cxr", init="bit-s", steps=3,
                   data="unit-test chest X-rays")
    release_dir = root / "release"
    record = make_release([(NAME, root / "run")], release_dir, allow_test_arch=True)
    assert record["modules"][NAME]["run"] == str(root / "run")
    assert (release_dir / NAME / "saved_model.pb").is_file()
    assert (release_dir / "MODEL_CARD.md").read_text() == (REPO / "MODEL_CARD.md").read_text()
    with pytest.raises(PublishError, match="test-only"):
        publish(release_dir)
    assert cli(publish_cli, [str(release_dir), "--allow-test-modules"]) == 0
    return release_dir


PUBLISHED = [f"{NAME}.tar.gz", f"{NAME}.md", "MODEL_CARD.md", "manifest.json", "SHA256SUMS"]


def test_publish_writes_archive_card_manifest_and_sums(release):
    for name in PUBLISHED:
        assert (release / name).is_file(), name
    lines = (release / "SHA256SUMS").read_text().splitlines()
    sums = {name: digest for digest, name in (line.split("  ") for line in lines)}
    assert set(sums) == set(PUBLISHED) - {"SHA256SUMS"}
    for name, digest in sums.items():
        assert hashlib.sha256((release / name).read_bytes()).hexdigest() == digest
    with tarfile.open(release / f"{NAME}.tar.gz") as tar:
        names = tar.getnames()
    assert "saved_model.pb" in names and "assets/medfound_module.json" in names  # hub layout
    assert read_metadata(release / f"{NAME}.tar.gz").name == NAME  # what `medfound info` reads
    manifest = json.loads((release / "manifest.json").read_text())
    entry = manifest["modules"][NAME]
    assert entry["metadata"]["arch"] == "tiny" and len(entry["probe"]["embedding"]) == 1024
    card = (release / f"{NAME}.md").read_text()
    assert sums[f"{NAME}.tar.gz"] in card and "NOT a REMEDIS model" in card
    assert "unit-test chest X-rays" in card and "## Intended use" in card


def test_verify_passes_and_reports_each_module(release, capsys):
    assert verify(release) == {NAME: "ok"}
    assert cli(verify_cli, [str(release)]) == 0
    assert f"{NAME}: ok" in capsys.readouterr().out


@pytest.mark.parametrize("victim, where", [(name, where) for name in PUBLISHED
                                           for where in (0.1, 0.9)])
def test_a_tampered_byte_in_any_published_file_fails_verify_naming_it(release, tmp_path, victim,
                                                                      where):
    copy = tmp_path / "release"
    shutil.copytree(release, copy, ignore=shutil.ignore_patterns(NAME))  # published files only
    data = bytearray((copy / victim).read_bytes())
    data[int(len(data) * where)] ^= 0x01
    (copy / victim).write_bytes(bytes(data))
    with pytest.raises(VerifyError, match=victim.replace(".", r"\.")) as err:
        verify(copy)
    assert any(p.startswith(f"{victim}:") or (victim == "SHA256SUMS" and victim in p)
               for p in err.value.problems), err.value.problems


def test_verify_notices_a_changed_module_with_a_consistent_hash(release, tmp_path):
    """Re-publishing different weights under the old manifest's probe must fail the probe check."""
    copy = tmp_path / "release"
    shutil.copytree(release, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["modules"][NAME]["probe"]["embedding"][0] += 0.5
    text = json.dumps(manifest)
    (copy / "manifest.json").write_text(text)
    sums = (copy / "SHA256SUMS").read_text().splitlines()
    new_hash = hashlib.sha256(text.encode()).hexdigest()
    (copy / "SHA256SUMS").write_text("".join(
        (f"{new_hash}  manifest.json" if line.endswith("  manifest.json") else line) + "\n"
        for line in sums))
    # Found before the module is run (issue 25: a SavedModel is never run once a check failed).
    with pytest.raises(VerifyError, match=rf"module {NAME}'s probe norm/mean do not match"):
        verify(copy)


def test_hub_load_from_an_http_url(release, tmp_path, monkeypatch):
    import tensorflow_hub as hub

    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub-cache"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(release))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{NAME}.tar.gz"
        module = hub.load(url)
    finally:
        server.shutdown()
        server.server_close()
    x = probe_image(64)
    local = tf.saved_model.load(str(release / NAME))
    np.testing.assert_allclose(module(x).numpy(), local(x).numpy(), atol=1e-6)
    embedding = tf.reduce_mean(module(tf.constant(probe_image(448))), axis=[-3, -2])
    manifest = json.loads((release / "manifest.json").read_text())
    recorded = manifest["modules"][NAME]["probe"]["embedding"]
    np.testing.assert_allclose(embedding.numpy()[0], recorded, atol=1e-4, rtol=1e-4)


def test_load_checks_the_manifest_hash_before_unpacking(release, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFOUND_CACHE", str(tmp_path / "cache"))
    assert isinstance(load(release / f"{NAME}.tar.gz"), BiTBackbone)
    copy = tmp_path / "release"
    shutil.copytree(release, copy, ignore=shutil.ignore_patterns(NAME))
    with open(copy / f"{NAME}.tar.gz", "ab") as f:
        f.write(b"\0")
    shutil.rmtree(tmp_path / "cache")
    with pytest.raises(UnsafeArchiveError, match="does not match the release manifest"):
        load(copy / f"{NAME}.tar.gz")
    assert not (tmp_path / "cache").exists()


def _archive(path, members):
    """Writes a hand-made .tar.gz from (TarInfo-kwargs, bytes-or-None) pairs."""
    with tarfile.open(path, "w:gz") as tar:
        for fields, data in members:
            info = tarfile.TarInfo(fields.pop("name"))
            for key, value in fields.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


MALICIOUS = {
    "absolute": [({"name": "/tmp/medfound-evil"}, b"x")],
    "dotdot": [({"name": "saved_model.pb"}, b"x"), ({"name": "variables/../../evil"}, b"x")],
    "symlink-out": [({"name": "assets", "type": tarfile.SYMTYPE, "linkname": "/etc"}, None)],
    "symlink-up": [({"name": "a/b", "type": tarfile.SYMTYPE, "linkname": "../../outside"}, None)],
    "hardlink-out": [({"name": "x", "type": tarfile.LNKTYPE, "linkname": "../outside"}, None)],
    "device": [({"name": "dev", "type": tarfile.CHRTYPE}, None)],
}


@pytest.mark.parametrize("kind", sorted(MALICIOUS))
def test_malicious_archives_are_refused(tmp_path, kind):
    archive = _archive(tmp_path / "evil.tar.gz", [(dict(m), d) for m, d in MALICIOUS[kind]])
    target = tmp_path / "unpacked" / "module"
    with pytest.raises(UnsafeArchiveError, match="refusing"):
        safe_extract(archive, target)
    assert not target.exists() and not (tmp_path / "outside").exists()
    assert not (tmp_path / "evil").exists()
    with pytest.raises(UnsafeArchiveError):
        load(archive)


def test_safe_extract_checks_the_hash_first(release, tmp_path):
    with pytest.raises(UnsafeArchiveError, match="SHA-256"):
        safe_extract(release / f"{NAME}.tar.gz", tmp_path / "m", expected_sha256="0" * 64)
    assert not (tmp_path / "m").exists()
    folder = safe_extract(release / f"{NAME}.tar.gz", tmp_path / "m")
    assert (folder / "saved_model.pb").is_file()


def _rewrite_sums(folder, changed):
    """SHA256SUMS with the hashes of ``changed`` files recomputed (a consistent forgery)."""
    lines = (folder / "SHA256SUMS").read_text().splitlines()
    out = []
    for line in lines:
        digest, name = line.split("  ")
        if name in changed:
            digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        out.append(f"{digest}  {name}\n")
    (folder / "SHA256SUMS").write_text("".join(out))


def test_verify_cross_checks_the_card_and_the_modules_own_metadata(release, tmp_path):
    """A replaced tarball with manifest and sums updated to match still fails: the card beside
    it states the old hash, and the module's own metadata disagrees with the manifest's."""
    from medfound.export.pack import pack_module

    copy = tmp_path / "release"
    shutil.copytree(release, copy, ignore=shutil.ignore_patterns(NAME))
    module = tmp_path / NAME
    shutil.copytree(release / NAME, module)
    meta_file = module / "assets" / "medfound_module.json"
    meta = json.loads(meta_file.read_text())
    meta["steps"] = 99
    meta_file.write_text(json.dumps(meta))
    pack_module(module, copy / f"{NAME}.tar.gz")  # same weights, so the same probe
    digest = hashlib.sha256((copy / f"{NAME}.tar.gz").read_bytes()).hexdigest()
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["modules"][NAME]["sha256"] = manifest["files"][f"{NAME}.tar.gz"] = digest
    (copy / "manifest.json").write_text(json.dumps(manifest))
    _rewrite_sums(copy, {f"{NAME}.tar.gz", "manifest.json"})
    with pytest.raises(VerifyError) as err:
        verify(copy)
    problems = err.value.problems
    assert any(p.startswith(f"{NAME}.md: the card does not state") and "SHA-256" in p
               for p in problems), problems
    assert any("metadata and manifest.json disagree about steps (99 vs 3)" in p
               for p in problems), problems


def _ssh_key(path):
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen (OpenSSH) is not installed; CI has it")
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(path)],
                   check=True)
    return path, path.with_name(path.name + ".pub")


def test_verify_key_checks_a_detached_ssh_signature(release, tmp_path, capsys):
    from medfound.export.signing import sign_file

    private, public = _ssh_key(tmp_path / "publisher")
    _, other = _ssh_key(tmp_path / "someone-else")
    copy = tmp_path / "release"
    shutil.copytree(release, copy, ignore=shutil.ignore_patterns(NAME))
    with pytest.raises(VerifyError, match="SHA256SUMS.sig: missing"):
        verify(copy, key=public)
    sign_file(copy / "SHA256SUMS", private)
    assert cli(verify_cli, [str(copy), "--key", str(public)]) == 0
    assert "good signature" in capsys.readouterr().out
    with pytest.raises(VerifyError, match="not a valid signature of SHA256SUMS"):
        verify(copy, key=other)
    # A consistent forgery of manifest and sums passes the hash checks but not the signature.
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["medfound_version"] = "forged"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    _rewrite_sums(copy, {"manifest.json"})
    with pytest.raises(VerifyError) as err:
        verify(copy, key=public)
    assert [p for p in err.value.problems if p.startswith("SHA256SUMS.sig: not a valid")]


def test_verify_refuses_a_bomb_with_manifest_and_sums_updated_to_match(release, tmp_path, capsys):
    """Hostile-user case 9: a gzip bomb in place of the module tarball, its hash written into the
    manifest and SHA256SUMS, used to unpack and pass; now verify refuses it from the headers."""
    from tests.test_archive_safety import MiB, _module_archive

    copy = tmp_path / "release"
    shutil.copytree(release, copy, ignore=shutil.ignore_patterns(NAME))
    bomb = copy / f"{NAME}.tar.gz"
    _module_archive(bomb, extra=[("assets/zeros", bytes(80 * MiB))])
    digest = hashlib.sha256(bomb.read_bytes()).hexdigest()
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["modules"][NAME]["sha256"] = manifest["files"][f"{NAME}.tar.gz"] = digest
    (copy / "manifest.json").write_text(json.dumps(manifest))
    _rewrite_sums(copy, {f"{NAME}.tar.gz", "manifest.json"})
    assert main(["verify", str(copy)]) != 0
    captured = capsys.readouterr()
    assert f"{NAME}.tar.gz" in captured.err + captured.out
    assert "archive bomb" in captured.err + captured.out
    assert f"{NAME}: ok" not in captured.out
