"""Module archives: bombs, members a SavedModel never has, and nothing left after a refusal."""
from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from medfound.formats.archive import UnsafeArchiveError, check_archive, read_member, safe_extract
from medfound.resolve import load

MiB = 1 << 20


def _module_archive(path, extra=(), data_bytes=None, links=(), metadata=b"{}"):
    """A SavedModel-shaped .tar.gz: incompressible 'weights' plus ``extra`` (name, bytes) files."""
    weights = data_bytes if data_bytes is not None else np.random.default_rng(0).bytes(MiB)
    files = [("saved_model.pb", b"\x08\x01" * 50), ("variables/variables.index", b"i" * 64),
             ("variables/variables.data-00000-of-00001", weights),
             ("assets/medfound_module.json", metadata), *extra]
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def test_a_module_shaped_archive_passes(tmp_path):
    archive = _module_archive(tmp_path / "ok.tar.gz")
    assert "variables/variables.index" in check_archive(archive)
    assert (safe_extract(archive, tmp_path / "m") / "saved_model.pb").is_file()


@pytest.mark.parametrize("kind, words", [
    ("assets-bomb", "beside"),  # 80 MiB of zeros in assets/ beside 1 MiB of variables
    ("variables-bomb", "do not compress like that"),  # zero 'weights': 80 MiB from ~80 KB
])
def test_archive_bombs_are_refused_before_anything_is_written(tmp_path, monkeypatch, kind, words):
    zeros = bytes(80 * MiB)
    archive = (_module_archive(tmp_path / "bomb.tar.gz", extra=[("assets/zeros", zeros)])
               if kind == "assets-bomb" else _module_archive(tmp_path / "bomb.tar.gz",
                                                             data_bytes=zeros))
    assert archive.stat().st_size < 2 * MiB
    with pytest.raises(UnsafeArchiveError, match=words):
        safe_extract(archive, tmp_path / "unpacked")
    assert not (tmp_path / "unpacked").exists()
    # `medfound embed --module bomb.tar.gz` goes through the same cache unpack: nothing stays
    monkeypatch.setenv("MEDFOUND_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UnsafeArchiveError, match="archive bomb"):
        load(archive)
    left = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] if (
        tmp_path / "cache").exists() else []
    assert left == []


@pytest.mark.parametrize("extra, links, words", [
    ([("run.sh", b"rm -rf ~")], (), "not part of a SavedModel"),
    ([("variables/extra.py", b"x")], (), "not part of a SavedModel"),
    ([], [("assets/meta", "medfound_module.json")], "is a link"),
])
def test_members_a_module_never_has_are_refused(tmp_path, extra, links, words):
    archive = _module_archive(tmp_path / "odd.tar.gz", extra=extra, links=links)
    with pytest.raises(UnsafeArchiveError, match=words):
        safe_extract(archive, tmp_path / "unpacked")
    assert not (tmp_path / "unpacked").exists()


def test_an_archive_without_saved_model_is_refused(tmp_path):
    archive = tmp_path / "nomodel.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("assets/readme.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(UnsafeArchiveError, match="no saved_model.pb"):
        check_archive(archive)


def test_read_member_refuses_a_huge_metadata_member(tmp_path):
    archive = _module_archive(tmp_path / "m.tar.gz", metadata=bytes(17 * MiB))
    with pytest.raises(UnsafeArchiveError, match="too large"):
        read_member(archive, "assets/medfound_module.json")


def test_embed_with_a_bomb_for_a_module_is_one_line_and_leaves_no_cache(tmp_path, monkeypatch,
                                                                       capsys):
    """Hostile case 9 as the user met it: `medfound embed --module bomb.tar.gz` left 1.1 GB in
    the cache; now one error line naming the archive, and neither cache nor output is written."""
    from PIL import Image

    from medfound.cli.main import main

    archive = _module_archive(tmp_path / "bomb.tar.gz", extra=[("assets/zeros", bytes(80 * MiB))])
    (tmp_path / "images").mkdir()
    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(tmp_path / "images" / "a.png")
    monkeypatch.setenv("MEDFOUND_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "emb.npz"
    assert main(["embed", "--module", str(archive), "--input", str(tmp_path / "images"),
                 "--out", str(out), "--quiet"]) != 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("medfound embed: error:"), lines
    assert "bomb.tar.gz" in lines[0] and "archive bomb" in lines[0]
    cache = tmp_path / "cache"
    assert not cache.exists() or [p for p in cache.rglob("*") if p.is_file()] == []
    assert not out.exists()


def test_packing_is_byte_identical_every_time(tmp_path):
    """The same module folder packs to the same bytes (and SHA-256), whatever temporary file the
    archive was written through (gzip records a file name unless told not to)."""
    from medfound.export.pack import pack_module
    from medfound.utils.files import sha256_file

    module = tmp_path / "m"
    (module / "variables").mkdir(parents=True)
    (module / "saved_model.pb").write_bytes(b"graph")
    (module / "variables" / "variables.index").write_bytes(b"index")
    first = pack_module(module, tmp_path / "a.tar.gz")
    second = pack_module(module, tmp_path / "b.tar.gz")
    assert sha256_file(first) == sha256_file(second)
