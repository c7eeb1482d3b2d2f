"""setup.py declares what the package imports, and imports (or needs) what it declares."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMPORT_NAMES = {"pillow": "PIL", "tensorflow-hub": "tensorflow_hub",
                "tensorflow-datasets": "tensorflow_datasets", "absl-py": "absl"}
# Runtime dependencies that nothing imports directly, each with the reason it is declared.
NEEDED_UNIMPORTED = {"tensorboard": "tf.summary writes run logs through it",
                     "importlib_resources": "TFDS 4.9 needs it to prepare builders",
                     "setuptools": "< 81 keeps pkg_resources, which tensorflow_hub imports"}


def _setup_lists() -> tuple[list[str], dict[str, list[str]]]:
    tree = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, "id", "") == "setup")
    kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords
          if k.arg in ("install_requires", "extras_require")}
    name = lambda req: re.split(r"[<>=!~\[; ]", req, 1)[0].lower()  # noqa: E731
    return ([name(r) for r in kw["install_requires"]],
            {e: [name(r) for r in reqs] for e, reqs in kw["extras_require"].items()})


def _top_level_imports(folder: Path) -> set[str]:
    names = set()
    for file in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_runtime_dependencies_are_imported_and_imports_are_declared():
    runtime, extras = _setup_lists()
    imported = _top_level_imports(REPO / "medfound")
    unused = [d for d in runtime if IMPORT_NAMES.get(d, d.replace("-", "_")) not in imported
              and d not in NEEDED_UNIMPORTED]
    assert not unused, f"declared in install_requires but never imported: {unused}"
    declared = {IMPORT_NAMES.get(d, d.replace("-", "_")) for d in
                runtime + [d for reqs in extras.values() for d in reqs]}
    third_party = {n for n in imported - set(sys.stdlib_module_names) if n != "medfound"}
    undeclared = sorted(third_party - declared)
    assert not undeclared, f"imported by medfound but not declared in setup.py: {undeclared}"
    for extra, reqs in extras.items():  # an extra must add something the base install lacks
        assert not set(reqs) & set(runtime), f"extra {extra!r} repeats base dependencies"
