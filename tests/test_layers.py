"""The package's layering: measurement is a leaf, and nothing in the library reaches up into the CLI.

``medfound.evaluation`` (metrics, plots, shifts) is used by fine-tuning and by ``evaluate``; if it
imported ``medfound.finetune`` (or the CLI) again, the two would form a cycle. The checks read every
import statement, including the ones inside functions, so a lazy import cannot hide a cycle.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medfound"
# What the leaf may import from medfound: itself, the small utilities below everything, and the
# image ops of medfound.augment (pure TensorFlow functions; one Gaussian blur serves augmentation
# and the sharpness shift), which import nothing of medfound but themselves.
LEAF_MAY_IMPORT = ("medfound.evaluation", "medfound.utils", "medfound.augment")
LEAF_MODULES = ("medfound.evaluation.metrics", "medfound.evaluation.plots", "medfound.evaluation.shifts")


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = PACKAGE.parent) -> set[str]:
    """Every medfound module ``path`` (a file under ``root``) imports, at the top or inside a function."""
    names: set[str] = set()
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if n == "medfound" or n.startswith("medfound.")}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_import_scan_sees_lazy_and_relative_imports(tmp_path):
    """The scanner itself: a function-level import and a relative one are both reported."""
    pkg = tmp_path / "medfound" / "evaluation"
    pkg.mkdir(parents=True)
    probe = pkg / "probe.py"
    probe.write_text("def f():\n    from medfound.finetune.trainer import finetune\n"
                     "from ..cli import main\n")
    found = imported_modules(probe, root=tmp_path)
    assert "medfound.finetune.trainer" in found and "medfound.cli" in found


@pytest.mark.parametrize("path", sorted((PACKAGE / "evaluation").glob("*.py")), ids=lambda p: p.name)
def test_evaluation_is_a_leaf(path):
    """metrics, plots and shifts import nothing of medfound above them (no fine-tuning, no CLI)."""
    above = sorted(n for n in imported_modules(path) if not _within(n, LEAF_MAY_IMPORT) and n != "medfound")
    assert not above, f"{path.relative_to(PACKAGE.parent)} imports {above}: medfound.evaluation must stay a leaf"


@pytest.mark.parametrize("path", [PACKAGE / "augment" / f"{n}.py" for n in ("filters", "color",
                                                                             "geometry")],
                         ids=lambda p: p.name)
def test_augment_ops_import_only_each_other(path):
    """The image ops the leaf may use stay below it (presets and preview sit above them)."""
    above = sorted(n for n in imported_modules(path) if not _within(n, ("medfound.augment",))
                   and n != "medfound")
    assert not above, f"{path.relative_to(PACKAGE.parent)} imports {above}"


def test_library_does_not_import_the_cli():
    """Only the command line (and ``python -m medfound``) may import ``medfound.cli``."""
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "cli" or rel.name == "__main__.py":
            continue
        cli = sorted(n for n in imported_modules(path) if _within(n, ("medfound.cli",)))
        if cli:
            offenders[str(rel)] = cli
    assert not offenders, f"library modules import the CLI: {offenders}"


def test_leaf_modules_load_without_finetune_or_cli():
    """Importing the leaf in a fresh interpreter loads neither medfound.finetune nor medfound.cli."""
    code = ("import importlib, json, sys\n"
            f"for name in {LEAF_MODULES!r}: importlib.import_module(name)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('medfound.'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(LEAF_MODULES) <= set(loaded)
    above = [m for m in loaded if _within(m, ("medfound.finetune", "medfound.cli", "medfound.pretrain"))]
    assert not above, f"importing {LEAF_MODULES} also loaded {above}"


# Readers below the resolver, writers above it (issue 23): each arrow points one way.
LAYERS_BELOW = {
    "medfound.models": ("medfound.formats", "medfound.resolve", "medfound.export"),
    "medfound.formats": ("medfound.resolve", "medfound.export"),
    "medfound.resolve": ("medfound.export",),
}


@pytest.mark.parametrize("layer", sorted(LAYERS_BELOW))
def test_readers_sit_below_the_resolver_and_writers_above(layer):
    """models <- formats (readers) <- resolve <- export (writers): no module imports upwards,
    not even lazily inside a function."""
    root = PACKAGE.parent / Path(*layer.split("."))
    paths = sorted(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]
    offenders = {}
    for path in paths:
        above = sorted(n for n in imported_modules(path) if _within(n, LAYERS_BELOW[layer]))
        if above:
            offenders[str(path.relative_to(PACKAGE.parent))] = above
    assert paths and not offenders, f"{layer} imports a layer above it: {offenders}"


def test_model_layers_hold_no_tensorflow():
    """The Keras layers and the backbone use keras.ops only, so they run on every backend."""
    for name in ("layers.py", "bit.py", "bit_names.py", "configs.py", "input_check.py"):
        source = (PACKAGE / "models" / name).read_text()
        assert "import tensorflow" not in source, f"medfound/models/{name} imports TensorFlow"
