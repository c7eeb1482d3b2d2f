"""``medfound verify``: re-hash every published file, load every module, compare probe fingerprints.

Hashes are checked before anything is unpacked or loaded; a module whose archive fails its hash
is never opened. A SavedModel is a program: no module is loaded or run (the probe) until every
other check of the whole release has passed (signature, hashes, listing, paths, cards,
metadata). Every problem is reported with the file it concerns. A release that cannot be read
as one (manifest too large or not JSON, entries naming paths outside it) is a ``ReleaseError``.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from medfound.errors import UserError
from medfound.export.publish import (MANIFEST, MANIFEST_FORMAT, SUMS, PublishError,
                                     probe_embedding, read_manifest)
from medfound.formats.archive import UnsafeArchiveError, safe_extract
from medfound.formats.metadata import read_metadata
from medfound.utils.limits import MAX_JSON_BYTES as MAX_MANIFEST_BYTES
from medfound.export.signing import SIGNATURE_SUFFIX, SigningError, verify_file
from medfound.utils.files import sha256_file

MAX_SUMS_BYTES = 16 << 20  # one line per file of a release

PROBE_TOLERANCE = 1e-4  # absolute and relative, per embedding value


class ReleaseError(UserError):
    """The folder cannot be read as a release at all (the CLI: one line, exit 2)."""


class VerifyError(ValueError):
    """A release failed verification; ``problems`` lists each one, naming its file."""

    def __init__(self, release_dir: Path, problems: list[str]):
        self.problems = problems
        super().__init__(f"{release_dir}: verification failed ({len(problems)} problem(s)):\n"
                         + "\n".join(f"  - {p}" for p in problems))


def read_sums(path: Path, problems: list[str], allow_paths: bool = False) -> dict[str, str]:
    """Parses SHA256SUMS ('<hex>  <name>' lines); malformed lines become problems.

    ``allow_paths``: names may be relative paths below the folder (the Kaggle and Hugging Face
    layouts), never absolute and never with '..'.
    """
    sums: dict[str, str] = {}
    with open(path, "rb") as f:
        text = f.read(MAX_SUMS_BYTES + 1)
    if len(text) > MAX_SUMS_BYTES:
        raise ReleaseError(f"{path}: over {MAX_SUMS_BYTES >> 20} MiB; not a release's {SUMS}")
    for number, line in enumerate(text.decode(errors="replace").splitlines(), 1):
        digest, sep, name = line.partition("  ")
        parts = name.split("/")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) \
                or not name or "\\" in name or any(part in ("", ".", "..") for part in parts) \
                or (not allow_paths and len(parts) > 1):
            problems.append(f"{SUMS}: line {number} is malformed: {line[:100]!r}")
            continue
        sums[name] = digest
    return sums


def read_release_manifest(release_dir: Path) -> tuple[bytes | None, object]:
    """The manifest's bytes (read once, bounded) and their one parse (None when they are not
    JSON); only a hash-checked manifest is acted on (``check_hashes``), the parse of an
    unchecked one only tells which file was altered and which layout to check."""
    path = release_dir / MANIFEST
    if not path.is_file() or path.is_symlink():
        return None, None
    with open(path, "rb") as f:
        data = f.read(MAX_MANIFEST_BYTES + 1)
    try:
        return data, read_manifest(path, data)
    except PublishError as err:
        if len(data) > MAX_MANIFEST_BYTES:
            raise ReleaseError(str(err)) from None
        return data, None


def check_manifest_shape(path: Path, manifest, manifest_format: str) -> None:
    """A hash-checked manifest that is not a release manifest's shape: ReleaseError."""
    files = manifest.get("files") if isinstance(manifest, dict) else None
    modules = manifest.get("modules") if isinstance(manifest, dict) else None
    if not isinstance(manifest, dict) or manifest.get("format") != manifest_format:
        raise ReleaseError(f"{path}: not a medfound release manifest (format "
                           f"{manifest.get('format') if isinstance(manifest, dict) else None!r})")
    if not (isinstance(files, dict) and all(isinstance(k, str) and isinstance(v, str)
                                            for k, v in files.items())):
        raise ReleaseError(f"{path}: 'files' is not a mapping of file names to SHA-256 hashes")
    if not (isinstance(modules, dict) and all(isinstance(v, dict) for v in modules.values())):
        raise ReleaseError(f"{path}: 'modules' is not a mapping of module names to entries")


def check_hashes(release_dir: Path, problems: list[str], manifest_format: str = MANIFEST_FORMAT,
                 read: tuple[bytes | None, object] | None = None) -> tuple[dict, set[str]]:
    """Checks SHA256SUMS and manifest.json against the files; the manifest is hashed from the
    bytes ``read`` holds (default: read now) and trusted only when they match.

    Returns the manifest and the names of the files whose hashes passed.
    """
    import hashlib

    sums_path, manifest_path = release_dir / SUMS, release_dir / MANIFEST
    data, parsed = read if read is not None else read_release_manifest(release_dir)
    for required, there in ((sums_path, sums_path.is_file()), (manifest_path, data is not None)):
        if not there:
            problems.append(f"{required.name}: missing; is {release_dir} a published release?")
    if problems:
        return {}, set()
    sums = read_sums(sums_path, problems, allow_paths=manifest_format != MANIFEST_FORMAT)
    claimed = parsed.get("files") if isinstance(parsed, dict) else None
    claimed = claimed if isinstance(claimed, dict) else {}  # unchecked: only to tell who changed
    good = set()
    for name, digest in sorted(sums.items()):
        path = release_dir / name
        if path.is_symlink() or release_dir.resolve() not in path.resolve().parents:
            problems.append(f"{name}: a link or a path outside {release_dir}; refusing to read it")
            continue
        if not path.is_file():
            problems.append(f"{name}: listed in {SUMS} but missing")
            continue
        actual = hashlib.sha256(data).hexdigest() if name == MANIFEST else sha256_file(path)
        if actual == digest:
            good.add(name)
        elif claimed.get(name) == actual:  # the file agrees with the manifest: SUMS was altered
            problems.append(f"{SUMS}: its SHA-256 for {name} ({digest}) is wrong; "
                            f"{SUMS} was altered")
        elif name == MANIFEST:  # nothing else records its hash: either file may be the culprit
            problems.append(f"{name}: SHA-256 {actual} does not match {SUMS} ({digest}); "
                            f"{name} or {SUMS} was altered")
        else:
            problems.append(f"{name}: SHA-256 {actual} does not match {SUMS} ({digest}); the file "
                            "is corrupt or was altered")
    if MANIFEST not in sums:
        problems.append(f"{MANIFEST}: not listed in {SUMS}")
    if MANIFEST not in good:
        return {}, good
    try:
        manifest = read_manifest(manifest_path, data) if parsed is None else parsed
    except PublishError as err:
        raise ReleaseError(str(err)) from None
    check_manifest_shape(manifest_path, manifest, manifest_format)
    files = manifest["files"]
    for name, digest in sorted(files.items()):
        if sums.get(name) != digest:
            problems.append(f"{name}: {MANIFEST} and {SUMS} disagree about its SHA-256")
            good.discard(name)
    for name in sorted(set(sums) - set(files) - {MANIFEST}):
        problems.append(f"{name}: listed in {SUMS} but not in {MANIFEST}")
    return manifest, good


def check_metadata_agrees(where: str, meta, recorded, problems: list[str]) -> None:
    """The module's own metadata must be the manifest's, field by field (the input contract
    it implies included)."""
    own = json.loads(meta.to_json())
    recorded = recorded if isinstance(recorded, dict) else {}
    differ = sorted(k for k in set(own) | set(recorded) if own.get(k) != recorded.get(k))
    if differ:
        problems.append(f"{where}: the module's own metadata and {MANIFEST} disagree about "
                        + ", ".join(f"{k} ({own.get(k)!r} vs {recorded.get(k)!r})"
                                    for k in differ[:5]))


def check_card(release_dir: Path, name: str, entry: dict, problems: list[str]) -> None:
    """The module card must state the manifest's hash and probe, and the probe must add up."""
    card_name = entry.get("card")
    probe = entry.get("probe") or {}
    try:
        card = (release_dir / card_name).read_text()
        embedding = np.asarray(probe["embedding"], dtype=np.float64)
        norm, mean = float(probe["norm"]), float(probe["mean"])
    except (OSError, TypeError, KeyError, ValueError) as err:
        problems.append(f"{card_name}: cannot cross-check the card and the manifest ({err})")
        return
    if not (np.isclose(np.linalg.norm(embedding), norm, rtol=1e-6, atol=1e-9)
            and np.isclose(embedding.mean(), mean, rtol=1e-6, atol=1e-9)):
        problems.append(f"{MANIFEST}: module {name}'s probe norm/mean do not match its embedding")
    facts = {"its SHA-256": f"SHA-256 `{entry.get('sha256')}`",
             "its probe norm": f"L2 norm {norm:.6f}", "its probe mean": f"mean {mean:.6f}",
             "its name": f"# {name}\n"}
    stale = [what for what, text in facts.items() if text not in card]
    if stale:
        problems.append(f"{card_name}: the card does not state {MANIFEST}'s "
                        f"{', '.join(w.replace('its ', '') for w in stale)} for {name}; the card "
                        "or the manifest was replaced")


def _plain_name(release_dir: Path, value, what: str, nested: bool = False) -> str:
    """A manifest entry's file or folder name, refused (ReleaseError) unless it stays inside
    the release: relative, no '..', no '\\', one component unless ``nested``."""
    parts = value.split("/") if isinstance(value, str) else []
    if not parts or "\\" in value or any(part in ("", ".", "..") for part in parts) \
            or (len(parts) > 1 and not nested):
        raise ReleaseError(f"{release_dir / MANIFEST}: {what} {value!r} is not a path inside "
                           f"{release_dir}; refusing to verify this release")
    return value


def check_module(release_dir: Path, name: str, entry: dict, problems: list[str],
                 scratch: Path) -> Path | None:
    """Unpacks one (already hash-checked) module under ``scratch`` and checks its metadata and
    card; returns the folder for ``check_probe`` (never loaded here), or None."""
    archive = release_dir / entry["archive"]
    folder = scratch / name
    try:
        safe_extract(archive, folder, expected_sha256=entry.get("sha256"))
        meta = read_metadata(folder)
    except (UnsafeArchiveError, ValueError, OSError) as err:
        problems.append(f"{archive.name}: {err}")
        return None
    if meta.name != name:
        problems.append(f"{archive.name}: module metadata says {meta.name!r}, manifest {name!r}")
    check_metadata_agrees(archive.name, meta, entry.get("metadata"), problems)
    check_card(release_dir, name, entry, problems)
    return folder


def check_probe(where: str, entry: dict, problems: list[str], run) -> None:
    """Runs a module (``run(size)``: its probe embedding) and compares it with the manifest's.
    Call only when every other check of the release passed: a SavedModel is a program."""
    probe = entry.get("probe") or {}
    try:
        want = np.asarray(probe["embedding"], dtype=np.float64)
        got = run(int(probe["size"]))
    except Exception as err:  # noqa: BLE001 - any failure to load or run is this module's problem
        problems.append(f"{where}: does not load or run ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:200] if str(err) else ''})")
        return
    if got.shape != want.shape:
        problems.append(f"{where}: probe embedding has shape {got.shape}, recorded {want.shape}")
    elif not np.allclose(got, want, rtol=PROBE_TOLERANCE, atol=PROBE_TOLERANCE):
        problems.append(f"{where}: probe embedding differs from the one recorded at publish time "
                        f"by up to {np.abs(got - want).max():.3g}")


def layout_probe(folder: Path, layout: str, size: int) -> np.ndarray:
    """The probe embedding of one published unit, loaded as its users load it."""
    import tensorflow as tf

    from medfound.export.publish import probe_image

    if layout == "kaggle":
        return probe_embedding(tf.saved_model.load(str(folder)), size)
    from medfound.resolve import load

    out = load(folder)(tf.constant(probe_image(size)))
    return np.asarray(out["embedding"])[0].astype(np.float64)


def check_unit(release_dir: Path, layout: str, name: str, entry: dict, manifest: dict,
               good: set[str], problems: list[str]) -> bool:
    """The static checks of one Kaggle or Hugging Face unit (and of the timm folder beside a
    Hugging Face one): its files hash-checked, its metadata and instance record agreeing with the
    manifest. True when the unit may be probed."""
    from medfound.export.layouts import KAGGLE_FRAMEWORK

    unit = _plain_name(release_dir, entry.get("folder"), f"module {name} folder", nested=True)
    before = len(problems)
    meta = _unit_metadata(release_dir, layout, unit, name, entry, manifest, good, problems)
    if meta is None:
        return False
    if meta.name != name:
        problems.append(f"{unit}/: module metadata says {meta.name!r}, {MANIFEST} {name!r}")
    if layout == "kaggle":
        instance_file = release_dir / unit / "model-instance-metadata.json"
        try:
            instance = json.loads(instance_file.read_text())
            if (instance.get("instanceSlug"), instance.get("framework")) != (
                    name, KAGGLE_FRAMEWORK):
                problems.append(f"{unit}/model-instance-metadata.json: names "
                                f"{instance.get('instanceSlug')!r}/{instance.get('framework')!r}"
                                f", expected {name!r}/{KAGGLE_FRAMEWORK!r}")
        except (OSError, ValueError, AttributeError, RecursionError) as err:
            problems.append(f"{unit}/model-instance-metadata.json: unreadable ({err})")
    if layout == "huggingface" and entry.get("timm_folder") is not None:
        timm_unit = _plain_name(release_dir, entry["timm_folder"], f"module {name} timm folder",
                                nested=True)
        if _unit_metadata(release_dir, layout, timm_unit, name, entry, manifest, good,
                          problems) is None:
            return False
    return len(problems) == before


def _unit_metadata(release_dir: Path, layout: str, unit: str, name: str, entry: dict,
                   manifest: dict, good: set[str], problems: list[str]):
    """The metadata of one published folder whose listed files all passed their hash check,
    compared with the manifest's entry; None when it cannot be read (the problem is listed)."""
    from medfound.export.layouts import layout_module_metadata

    own = [n for n in manifest["files"] if n.startswith(f"{unit}/")]
    if not own:
        problems.append(f"{unit}/: {MANIFEST} lists no files of module {name}")
    if not own or not all(n in good for n in own):
        return None  # a failed hash is already listed by check_hashes
    try:
        meta = layout_module_metadata(release_dir / unit, layout)
    except (OSError, ValueError) as err:
        problems.append(f"{unit}/: {err}")
        return None
    check_metadata_agrees(f"{unit}/", meta, entry.get("metadata"), problems)
    return meta


def check_layout(release_dir: Path, layout: str, problems: list[str],
                 read: tuple[bytes | None, object] | None = None) -> dict:
    """Hashes, unlisted files, metadata agreement, then (all passed) the probe of every unit of
    a Kaggle or Hugging Face layout."""
    from medfound.export.layouts import LAYOUT_FORMAT

    manifest, good = check_hashes(release_dir, problems, manifest_format=LAYOUT_FORMAT, read=read)
    listed = set(manifest.get("files", {})) | {MANIFEST, SUMS, SUMS + SIGNATURE_SUFFIX}
    for path in sorted(p for p in release_dir.rglob("*") if p.is_file() or p.is_symlink()):
        name = path.relative_to(release_dir).as_posix()
        if name not in listed:
            problems.append(f"{name}: not listed in {SUMS}; it would be uploaded with the "
                            "release but nothing vouches for it")
    modules = sorted(manifest.get("modules", {}).items())
    passed = {name: check_unit(release_dir, layout, name, entry, manifest, good, problems)
              for name, entry in modules}
    if problems:
        return {name: "not loaded (checks failed)" for name, _ in modules}
    for name, entry in modules:
        for unit in filter(None, (entry["folder"], entry.get("timm_folder"))):
            folder = release_dir / unit  # the timm folder loads through medfound's timm reader
            check_probe(f"{unit}/", entry, problems,
                        lambda size, folder=folder: layout_probe(folder, layout, size))
    return {name: "ok" if ok else "failed" for name, ok in passed.items()}


def check_signature(release_dir: Path, key: str | os.PathLike, problems: list[str]) -> None:
    """``SHA256SUMS.sig`` must be a good signature of ``SHA256SUMS`` by ``key`` (a .pub file)."""
    try:
        verify_file(release_dir / SUMS, key)
    except SigningError as err:
        problems.append(str(err))


def verify(release_dir: str | os.PathLike, *, key: str | os.PathLike | None = None) -> dict:
    """Verifies a published release; returns {module name: 'ok'} or raises ``VerifyError``
    (``ReleaseError`` for a folder that cannot be read as a release).

    ``release_dir`` is a folder release (archives beside their module folders) or a Kaggle or
    Hugging Face layout folder written by ``medfound publish --layout``. With ``key`` (an
    OpenSSH public key file) the release must also carry a good ``SHA256SUMS.sig`` by that key:
    hashes alone prove that the files are the ones the lists name, not who made the lists. No
    module is loaded or run unless every other check passed.
    """
    from medfound.export.layouts import LAYOUT_FORMAT

    release_dir = Path(release_dir)
    if not release_dir.is_dir():
        raise VerifyError(release_dir, [f"{release_dir}: not a folder"])
    problems: list[str] = []
    if key is not None:
        check_signature(release_dir, key, problems)
    read = read_release_manifest(release_dir)  # read and parsed once, bounded
    unchecked = read[1] if isinstance(read[1], dict) else {}
    if unchecked.get("format") == LAYOUT_FORMAT and unchecked.get("layout") in ("kaggle",
                                                                               "huggingface"):
        results = check_layout(release_dir, unchecked["layout"], problems, read)
    else:
        results = _check_folder_release(release_dir, problems, read)
    if problems:
        raise VerifyError(release_dir, problems)
    return results


def _check_folder_release(release_dir: Path, problems: list[str], read) -> dict:
    """Hashes, listing, archives, cards and metadata of a folder release, then (all passed) the
    probe of every module."""
    import tensorflow as tf

    manifest, good = check_hashes(release_dir, problems, read=read)
    modules = sorted(manifest.get("modules", {}).items())
    for name, entry in modules:
        for field in ("archive", "card"):
            _plain_name(release_dir, entry.get(field), f"module {name} {field}")
            if entry[field] not in manifest["files"]:
                problems.append(f"{MANIFEST}: module {name} {field} {entry[field]!r} is not "
                                "listed")
    with tempfile.TemporaryDirectory() as scratch:
        folders = {name: check_module(release_dir, name, entry, problems, Path(scratch))
                   for name, entry in modules if entry["archive"] in good}
        if problems:  # an archive that failed its hash is among them (check_hashes)
            return {name: "not loaded (checks failed)" for name, _ in modules}
        for name, entry in modules:
            check_probe(entry["archive"], entry, problems, lambda size: probe_embedding(
                tf.saved_model.load(str(folders[name])), size))
    return {name: "ok" for name, _ in modules}
