"""``medfound publish``: turn a release folder of module folders into downloadable, checkable files.

Per module it writes ``<name>.tar.gz`` (TF-Hub compressed layout) and ``<name>.md`` (model card);
for the release ``MODEL_CARD.md``, ``manifest.json`` (hashes, metadata, probe fingerprints) and
``SHA256SUMS``. Every file is written to a temporary name and renamed when complete.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from medfound.export.pack import pack_module
from medfound.formats.metadata import METADATA_ASSET, ModuleMetadata, read_metadata
from medfound.export.model_card import render_module_card
from medfound.registry import HUB_MODULES, is_module_name
from medfound.utils.files import atomic_path, sha256_file
from medfound.version import __version__

MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
RELEASE_CARD = "MODEL_CARD.md"
MANIFEST_FORMAT = "medfound-release"


class PublishError(ValueError):
    """The release folder cannot be published as it is; the message says which file and why."""


def probe_image(size: int) -> np.ndarray:
    """The fixed probe: a smooth, deterministic (1, size, size, 3) float32 image in [0, 1]."""
    grid = np.linspace(0.0, 1.0, size, dtype=np.float64)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    channels = [0.5 + 0.5 * np.sin(2 * np.pi * (k + 1) * xx + 3 * yy * (k + 1) + k) * np.cos(5 * yy)
                for k in range(3)]
    return np.stack(channels, axis=-1)[None].astype(np.float32)


def probe_embedding(module, size: int) -> np.ndarray:
    """The pooled embedding a loaded module gives for the probe image (the PhysioNet colab's
    ``reduce_mean(module(images), axis=[-3, -2])``)."""
    import tensorflow as tf

    out = tf.reduce_mean(module(tf.constant(probe_image(size))), axis=[-3, -2])
    return out.numpy()[0].astype(np.float64)


def probe_record(embedding: np.ndarray, size: int) -> dict:
    """What the manifest keeps of a probe run: the embedding and two summaries for the card."""
    return {"size": int(size), "norm": float(np.linalg.norm(embedding)),
            "mean": float(embedding.mean()), "embedding": [float(v) for v in embedding]}


def find_release_card(release_dir: Path, model_card: str | os.PathLike | None) -> Path:
    """The release MODEL_CARD.md: the one given, the release's own, or the repository's."""
    candidates = [Path(model_card)] if model_card else [
        release_dir / RELEASE_CARD, Path(__file__).resolve().parents[2] / RELEASE_CARD]
    for path in candidates:
        if path.is_file():
            return path
    raise PublishError(f"no {RELEASE_CARD} found (looked at {', '.join(map(str, candidates))}); "
                       "pass --model-card")


def module_folders(release_dir: Path) -> list[Path]:
    """The module folders of a release (sub-folders holding a SavedModel), checked by name."""
    folders = sorted(p for p in release_dir.iterdir()  # hidden: temporaries, staging
                     if p.is_dir() and not p.name.startswith(".")
                     and (p / "saved_model.pb").is_file())
    if not folders:
        raise PublishError(f"{release_dir}: no module folders (sub-folders with saved_model.pb)")
    for folder in folders:
        if not is_module_name(folder.name):
            raise PublishError(f"{folder}: folder name is neither a REMEDIS module name "
                               f"({', '.join(HUB_MODULES)}) nor a valid custom name")
        if not (folder / METADATA_ASSET).is_file():
            raise PublishError(f"{folder}: no {METADATA_ASSET}; export it with `medfound export`")
    return folders


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _checked_metadata(folder: Path, allow_test_modules: bool) -> ModuleMetadata:
    meta: ModuleMetadata = read_metadata(folder)
    if meta.name != folder.name:
        raise PublishError(f"{folder}: metadata says {meta.name!r}, folder is {folder.name!r}")
    if meta.test_only and not allow_test_modules:
        raise PublishError(f"{folder}: test-only architecture {meta.arch!r}; refusing to "
                           "publish it as a REMEDIS module (tests: allow_test_modules=True)")
    return meta


def publish(release_dir: str | os.PathLike, *, model_card: str | os.PathLike | None = None,
            allow_test_modules: bool = False, layout: str = "folder",
            license_id: str = "apache-2.0", kaggle_owner: str | None = None,
            kaggle_model: str = "medfound-remedis",
            sign_key: str | os.PathLike | None = None) -> dict:
    """Publishes every module folder in ``release_dir``; returns the manifest.

    ``layout`` 'folder' writes archives, cards, manifest and sums beside the module folders (a
    plain web server serves them); 'kaggle' and 'huggingface' write ``release_dir/kaggle/`` or
    ``release_dir/huggingface/`` (see ``medfound.export.layouts``). Refuses modules whose
    metadata is marked ``test_only`` unless ``allow_test_modules`` (tests). With ``sign_key``
    (an OpenSSH private key) ``SHA256SUMS.sig`` is written beside ``SHA256SUMS``.
    """
    import tensorflow as tf

    from medfound.export import layouts

    if layout not in layouts.LAYOUTS:
        raise PublishError(f"unknown layout {layout!r}; choose one of {', '.join(layouts.LAYOUTS)}")
    release_dir = Path(release_dir)
    if not release_dir.is_dir():
        raise PublishError(f"{release_dir}: not a folder")
    card_source = find_release_card(release_dir, model_card)
    release_card = card_source.read_text()
    if sign_key is not None:  # found before anything is rewritten, not after
        from medfound.export.signing import SigningError, check_can_sign

        try:
            check_can_sign(sign_key)
        except SigningError as err:
            raise PublishError(str(err)) from None
    if layout != "folder":
        units = []
        for folder in module_folders(release_dir):
            meta = _checked_metadata(folder, allow_test_modules)
            probe = probe_record(probe_embedding(tf.saved_model.load(str(folder)),
                                                 meta.input_size), meta.input_size)
            where = (f"{layouts.KAGGLE_FRAMEWORK}/{meta.name}/" if layout == "kaggle"
                     else f"{meta.name}/")
            what = ("TF2 SavedModel" if layout == "kaggle"
                    else "native Keras backbone (the folder form of a .keras file)")
            files = (f"- `{where}`: the {what}; every file's SHA-256 is in the layout's "
                     "`manifest.json` and `SHA256SUMS`")
            usage = (layouts.usage_markdown(meta, "PATH_TO_THIS_VARIATION") if layout == "kaggle"
                     else layouts.hub_usage(meta))
            card = render_module_card(meta, archive=None, sha256=None, probe=probe,
                                      release_card=release_card, files=files, usage=usage)
            units.append((folder, meta, probe, card))
        try:
            manifest = layouts.publish_layout(
                release_dir, layout, units, release_card=release_card, license_id=license_id,
                owner=kaggle_owner or layouts.KAGGLE_OWNER_PLACEHOLDER, model_slug=kaggle_model)
        except ValueError as err:
            raise PublishError(str(err)) from err
        _sign(release_dir / layout / SUMS, sign_key)
        return manifest
    files: dict[str, str] = {}
    modules: dict[str, dict] = {}
    release_card_path = release_dir / RELEASE_CARD
    copy_card = card_source.resolve() != release_card_path.resolve()
    check_release_targets(release_dir, module_folders(release_dir), copy_card,
                          signing=sign_key is not None)
    for folder in module_folders(release_dir):
        meta = _checked_metadata(folder, allow_test_modules)
        archive = pack_module(folder, release_dir / f"{meta.name}.tar.gz")
        digest = sha256_file(archive)
        probe = probe_record(probe_embedding(tf.saved_model.load(str(folder)), meta.input_size),
                             meta.input_size)
        card = release_dir / f"{meta.name}.md"
        write_text(card, render_module_card(meta, archive=archive.name, sha256=digest,
                                            probe=probe, release_card=release_card))
        files[archive.name] = digest
        files[card.name] = sha256_file(card)
        modules[meta.name] = {"archive": archive.name, "card": card.name, "sha256": digest,
                              "metadata": json.loads(meta.to_json()), "probe": probe}
    if copy_card:
        with atomic_path(release_card_path) as tmp:
            shutil.copyfile(card_source, tmp)
    files[RELEASE_CARD] = sha256_file(release_card_path)
    manifest = {"format": MANIFEST_FORMAT, "format_version": 1, "medfound_version": __version__,
                "files": dict(sorted(files.items())), "modules": modules}
    write_text(release_dir / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    sums = {**files, MANIFEST: sha256_file(release_dir / MANIFEST)}
    write_text(release_dir / SUMS, "".join(f"{h}  {n}\n" for n, h in sorted(sums.items())))
    _sign(release_dir / SUMS, sign_key)
    return manifest


def check_release_targets(release_dir: Path, folders: list[Path], copy_card: bool,
                          signing: bool) -> None:
    """Refuses, before anything is written, a release file publish would replace that it
    cannot prove it wrote: ours are the files an earlier medfound manifest lists (and the
    manifest, sums and signature beside it) and module archives of the module's own name."""
    from medfound.formats.archive import UnsafeArchiveError, check_archive

    owned = _published_files(release_dir)
    targets = [name for folder in folders for name in (f"{folder.name}.tar.gz", f"{folder.name}.md")]
    targets += [RELEASE_CARD] * copy_card + [MANIFEST, SUMS] + [SUMS + ".sig"] * signing
    for name in targets:
        path = release_dir / name
        if not (path.exists() or path.is_symlink()) or (name in owned and path.is_file()
                                                         and not path.is_symlink()):
            continue
        if name.endswith(".tar.gz") and path.is_file() and not path.is_symlink():
            try:  # an archive a killed publish wrote before its manifest
                check_archive(path)
                continue
            except UnsafeArchiveError:
                pass
        raise PublishError(f"{path}: exists and was not written by medfound publish; refusing "
                           "to replace it (move it away, or publish from another folder)")


def _published_files(release_dir: Path) -> set[str]:
    """The file names an earlier publish wrote here, from its manifest (empty if none)."""
    path = release_dir / MANIFEST
    if not path.exists():
        return set()
    manifest = read_manifest(path)
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise PublishError(f"{path}: exists and is not a medfound release manifest; refusing "
                           "to replace it (move it away)")
    files = manifest.get("files")
    return set(files if isinstance(files, dict) else ()) | {MANIFEST, SUMS, SUMS + ".sig"}


def read_manifest(path: Path, data: bytes | None = None):
    """A release manifest parsed once, bounded in size and depth (medfound.utils.limits);
    PublishError naming the file for one too large, too deeply nested or not JSON."""
    from medfound.utils.limits import read_json

    try:
        return read_json(path, data, what="medfound release manifest")
    except ValueError as err:
        raise PublishError(str(err)) from None


def _sign(sums: Path, sign_key) -> None:
    """Signs SHA256SUMS with ``sign_key``; without one, an older signature beside it is stale."""
    from medfound.export.signing import SigningError, sign_file, signature_path

    if sign_key is None:
        old = signature_path(sums)
        if old.exists():
            print(f"medfound publish: warning: {old} signs an earlier {sums.name}; sign again "
                  "(--sign KEY) or remove it", file=sys.stderr)
        return
    try:
        sign_file(sums, sign_key)
    except SigningError as err:
        raise PublishError(str(err)) from err
