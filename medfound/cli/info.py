"""`medfound info`: print the metadata a module carries (without loading TensorFlow)."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "info", help="print a module's metadata",
        description="Prints the metadata of a medfound module (a SavedModel folder, a .tar.gz "
                    "hub archive, a .keras file or a timm folder) and its input contract, or "
                    "describes a PhysioNet REMEDIS file or BiT "
                    "SavedModel from its variables (format, architecture, parameters, sizes).")
    parser.add_argument("path", help="module folder, .tar.gz, .keras file or timm folder")
    parser.add_argument("--json", action="store_true", help="print the metadata as JSON")
    parser.set_defaults(func=run, needs_tensorflow=False)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medfound.formats.metadata import METADATA_ASSET, read_metadata

    # ValueError, FileNotFoundError (UnknownModuleFormat is a ValueError): one line from cli.main.
    path = Path(args.path)
    if path.is_dir() and (path / "saved_model.pb").is_file() \
            and not (path / METADATA_ASSET).is_file():
        # A PhysioNet REMEDIS file or BiT folder: described from its variables.
        from medfound.formats.module_info import describe as describe_saved_model

        info = describe_saved_model(path)
        if args.json:
            import dataclasses
            import json

            facts = {k: v for k, v in dataclasses.asdict(info).items() if k != "metadata"}
            print(json.dumps(facts, indent=2, default=list))
        else:
            print("\n".join(info.summary_lines()))
        return 0
    meta = read_metadata(args.path)
    print(meta.to_json() if args.json else "\n".join(describe(meta)))
    return 0


MODALITY_WORDS = {"cxr": "chest X-ray", "path": "pathology"}


def _explained(meta) -> dict:
    """Per field: a short phrase saying what its value means (empty fields have none)."""
    size = meta.pretraining_image_size
    serving = "the size the module's name serves; any square size >= 32 px works"
    if size and size != meta.input_size:
        serving += f"; it was pretrained at {size} px (see pretraining_image_size)"
    return {
        "modality": MODALITY_WORDS.get(meta.modality, ""),
        "arch": "test-only architecture" if meta.test_only else "BiT ResNetV2",
        "input_size": serving,
        "embedding_dim": "length of the embedding, channels of the feature map",
        "init": "BiT weights the backbone started from" if meta.init != "random"
                else "trained from scratch",
        "init_data": "what the initial BiT checkpoint was trained on",
        "method": "self-supervised pretraining method ('none': BiT weights as released)",
        "steps": "pretraining steps",
        "pretraining_image_size": "image size used during pretraining",
        "output_stride": "feature-map pixels per input pixel, per side",
        "test_only": "never publish as a REMEDIS model" if meta.test_only else "",
    }


def describe(meta) -> list[str]:
    """``medfound info``'s lines: each recorded field with what it means; empty ones omitted."""
    import dataclasses

    lines = []
    if meta.test_only:
        lines.append("WARNING: test-only architecture; this is NOT a REMEDIS model")
    elif not meta.is_remedis:
        lines.append("note: a custom module, not one of the eight REMEDIS modules")
    explained = _explained(meta)
    missing = []
    for field in dataclasses.fields(meta):
        value = getattr(meta, field.name)
        if value in (None, "", []) or (field.name == "test_only" and not value):
            if field.name != "test_only":
                missing.append(field.name)
            continue
        if isinstance(value, list):
            value = "-".join(map(str, value))
        note = explained.get(field.name)
        lines.append(f"{field.name}: {value}" + (f"  ({note})" if note else ""))
    if missing:
        lines.append(f"not recorded: {', '.join(missing)}")
    lines += [f"input contract: {line[2:]}" for line in meta.input_contract.card_lines()]
    return lines
