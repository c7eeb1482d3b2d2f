"""``medfound verify``: re-hash every published file, load every module, compare probe fingerprints.

Hashes are checked before anything is unpacked or loaded; a module whose archive fails its hash
is never opened. Every problem is reported with the file it concerns.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from medfound.formats.archive import UnsafeArchiveError, safe_extract
from medfound.formats.metadata import read_metadata
from medfound.export.publish import MANIFEST, MANIFEST_FORMAT, SUMS, probe_embedding
from medfound.export.signing import SIGNATURE_SUFFIX, SigningError, verify_file
from medfound.utils.files import sha256_file

PROBE_TOLERANCE = 1e-4  # absolute and relative, per embedding value


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
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        digest, sep, name = line.partition("  ")
        parts = name.split("/")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) \
                or not name or "\\" in name or any(part in ("", ".", "..") for part in parts) \
                or (not allow_paths and len(parts) > 1):
            problems.append(f"{SUMS}: line {number} is malformed: {line[:100]!r}")
            continue
        sums[name] = digest
    return sums


def _unverified_manifest_files(path: Path) -> dict:
    """The manifest's file hashes, read without trusting them (only to tell who was altered)."""
    try:
        files = json.loads(path.read_text()).get("files", {})
        return files if isinstance(files, dict) else {}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return {}


def check_hashes(release_dir: Path, problems: list[str],
                 manifest_format: str = MANIFEST_FORMAT) -> tuple[dict, set[str]]:
    """Checks SHA256SUMS and manifest.json against the files.

    Returns the manifest and the names of the files whose hashes passed.
    """
    sums_path, manifest_path = release_dir / SUMS, release_dir / MANIFEST
    for required in (sums_path, manifest_path):
        if not required.is_file():
            problems.append(f"{required.name}: missing; is {release_dir} a published release?")
    if problems:
        return {}, set()
    sums = read_sums(sums_path, problems, allow_paths=manifest_format != MANIFEST_FORMAT)
    claimed = _unverified_manifest_files(manifest_path)
    good = set()
    for name, digest in sorted(sums.items()):
        path = release_dir / name
        if path.is_symlink() or release_dir.resolve() not in path.resolve().parents:
            problems.append(f"{name}: a link or a path outside {release_dir}; refusing to read it")
            continue
        if not path.is_file():
            problems.append(f"{name}: listed in {SUMS} but missing")
            continue
        actual = sha256_file(path)
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
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        if manifest.get("format") != manifest_format:
            raise KeyError("format")
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        problems.append(f"{MANIFEST}: not a medfound release manifest ({err})")
        return {}, set()
    for name, digest in sorted(files.items()):
        if sums.get(name) != digest:
            problems.append(f"{name}: {MANIFEST} and {SUMS} disagree about its SHA-256")
            good.discard(name)
    for name in sorted(set(sums) - set(files) - {MANIFEST}):
        problems.append(f"{name}: listed in {SUMS} but not in {MANIFEST}")
    return manifest, good


def check_metadata_agrees(where: str, meta, recorded, problems: list[str]) -> None:
    """The module's own metadata must be the manifest's, field by field."""
    import dataclasses

    own = dataclasses.asdict(meta)
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


def check_module(release_dir: Path, name: str, entry: dict, problems: list[str]) -> None:
    """Unpacks one (already hash-checked) module, loads it and compares its probe embedding."""
    import tensorflow as tf

    archive = release_dir / entry["archive"]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / name
        try:
            safe_extract(archive, folder, expected_sha256=entry["sha256"])
        except UnsafeArchiveError as err:
            problems.append(f"{archive.name}: {err}")
            return
        meta = read_metadata(folder)
        if meta.name != name:
            problems.append(f"{archive.name}: module metadata says {meta.name!r}, "
                            f"manifest {name!r}")
        check_metadata_agrees(archive.name, meta, entry.get("metadata"), problems)
        check_card(release_dir, name, entry, problems)
        probe = entry["probe"]
        got = probe_embedding(tf.saved_model.load(str(folder)), probe["size"])
    want = np.asarray(probe["embedding"], dtype=np.float64)
    if got.shape != want.shape:
        problems.append(f"{archive.name}: probe embedding has shape {got.shape}, recorded "
                        f"{want.shape}")
    elif not np.allclose(got, want, rtol=PROBE_TOLERANCE, atol=PROBE_TOLERANCE):
        problems.append(f"{archive.name}: probe embedding differs from the one recorded at "
                        f"publish time by up to {np.abs(got - want).max():.3g}")


def _layout_of(release_dir: Path) -> str | None:
    """'kaggle' / 'huggingface' when ``release_dir`` is such a layout folder, else None."""
    from medfound.export.layouts import LAYOUT_FORMAT

    try:
        manifest = json.loads((release_dir / MANIFEST).read_text())
        return manifest.get("layout") if manifest.get("format") == LAYOUT_FORMAT else None
    except (OSError, ValueError, AttributeError):
        return None


def layout_probe(folder: Path, layout: str, size: int) -> np.ndarray:
    """The probe embedding of one published unit, loaded as its users load it."""
    import tensorflow as tf

    from medfound.export.publish import probe_image

    if layout == "kaggle":
        return probe_embedding(tf.saved_model.load(str(folder)), size)
    from medfound.resolve import load

    out = load(folder)(tf.constant(probe_image(size)))
    return np.asarray(out["embedding"])[0].astype(np.float64)


def check_layout(release_dir: Path, layout: str, problems: list[str]) -> dict:
    """Hashes, unlisted files, metadata agreement and probe of a Kaggle or Hugging Face layout."""
    from medfound.export.layouts import KAGGLE_FRAMEWORK, LAYOUT_FORMAT, layout_module_metadata

    manifest, good = check_hashes(release_dir, problems, manifest_format=LAYOUT_FORMAT)
    listed = set(manifest.get("files", {})) | {MANIFEST, SUMS, SUMS + SIGNATURE_SUFFIX}
    for path in sorted(p for p in release_dir.rglob("*") if p.is_file() or p.is_symlink()):
        name = path.relative_to(release_dir).as_posix()
        if name not in listed:
            problems.append(f"{name}: not listed in {SUMS}; it would be uploaded with the "
                            "release but nothing vouches for it")
    results = {}
    for name, entry in sorted(manifest.get("modules", {}).items()):
        folder = release_dir / str(entry.get("folder", ""))
        unit = f"{entry.get('folder')}/"
        own = [n for n in manifest["files"] if n.startswith(unit)]
        if not own or not all(n in good for n in own):
            results[name] = "not loaded (hash check failed)"
            continue
        before = len(problems)
        try:
            meta = layout_module_metadata(folder, layout)
        except (OSError, ValueError) as err:
            problems.append(f"{unit}: {err}")
            results[name] = "failed"
            continue
        check_metadata_agrees(unit, meta, entry.get("metadata"), problems)
        if meta.name != name:
            problems.append(f"{unit}: module metadata says {meta.name!r}, {MANIFEST} {name!r}")
        if layout == "kaggle":
            instance_file = folder / "model-instance-metadata.json"
            try:
                instance = json.loads(instance_file.read_text())
                if (instance.get("instanceSlug"), instance.get("framework")) != (
                        name, KAGGLE_FRAMEWORK):
                    problems.append(f"{unit}model-instance-metadata.json: names "
                                    f"{instance.get('instanceSlug')!r}/{instance.get('framework')!r}"
                                    f", expected {name!r}/{KAGGLE_FRAMEWORK!r}")
            except (OSError, ValueError, AttributeError) as err:
                problems.append(f"{unit}model-instance-metadata.json: unreadable ({err})")
        probe = entry.get("probe") or {}
        try:
            got = layout_probe(folder, layout, int(probe["size"]))
            want = np.asarray(probe["embedding"], dtype=np.float64)
        except Exception as err:  # noqa: BLE001 - any failure to load is this unit's problem
            problems.append(f"{unit}: does not load or run ({type(err).__name__}: "
                            f"{str(err).splitlines()[0][:200] if str(err) else ''})")
        else:
            if got.shape != want.shape or not np.allclose(got, want, rtol=PROBE_TOLERANCE,
                                                          atol=PROBE_TOLERANCE):
                problems.append(f"{unit}: probe embedding differs from the one recorded at "
                                "publish time")
        results[name] = "ok" if len(problems) == before else "failed"
    return results


def check_signature(release_dir: Path, key: str | os.PathLike, problems: list[str]) -> None:
    """``SHA256SUMS.sig`` must be a good signature of ``SHA256SUMS`` by ``key`` (a .pub file)."""
    try:
        verify_file(release_dir / SUMS, key)
    except SigningError as err:
        problems.append(str(err))


def verify(release_dir: str | os.PathLike, *, key: str | os.PathLike | None = None) -> dict:
    """Verifies a published release; returns {module name: 'ok'} or raises ``VerifyError``.

    ``release_dir`` is a folder release (archives beside their module folders) or a Kaggle or
    Hugging Face layout folder written by ``medfound publish --layout``. With ``key`` (an
    OpenSSH public key file) the release must also carry a good ``SHA256SUMS.sig`` by that key:
    hashes alone prove that the files are the ones the lists name, not who made the lists.
    """
    release_dir = Path(release_dir)
    if not release_dir.is_dir():
        raise VerifyError(release_dir, [f"{release_dir}: not a folder"])
    problems: list[str] = []
    if key is not None:
        check_signature(release_dir, key, problems)
    layout = _layout_of(release_dir)
    if layout is not None:
        results = check_layout(release_dir, layout, problems)
        if problems:
            raise VerifyError(release_dir, problems)
        return results
    manifest, good = check_hashes(release_dir, problems)
    results = {}
    for name, entry in sorted(manifest.get("modules", {}).items()):
        for key in ("archive", "card"):
            if entry.get(key) not in manifest["files"]:
                problems.append(f"{MANIFEST}: module {name} {key} {entry.get(key)!r} is not listed")
        if entry.get("archive") in good:
            before = len(problems)
            check_module(release_dir, name, entry, problems)
            results[name] = "ok" if len(problems) == before else "failed"
        else:
            results[name] = "not loaded (hash check failed)"
    if problems:
        raise VerifyError(release_dir, problems)
    return results
