"""The hostile-user catalogue of the whole-slide surfaces (issue 25, classes 3-7): `medfound embed
--slides` and `medfound finetune --task camelyon16-*` run as the console script runs them, in a
subprocess. A refusal is one line `medfound COMMAND: error: ...` naming the file, row or flag,
exit code 2, and nothing of the user's changes; a bad slide among good ones is listed by name in
failures.csv while the good ones are still embedded."""
from __future__ import annotations

import csv
import hashlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("tiffslide", reason="tiffslide (a medfound dependency) is not installed")
pytest.importorskip("tifffile", reason="tifffile (test extra) writes the test slides")

from medfound.slides.synthetic import (SET_SIZE, rect, write_asap_xml,  # noqa: E402
                                       write_pyramid, write_slide_set)

REPO = Path(__file__).resolve().parents[1]
NAME = "path-50x1-remedis-m"
GEOMETRY = "--mpp 1 --tile-size 32 --min-tissue 0.5 --image-size 32 --quiet"


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with a hash of its content."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            state[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            state[os.path.relpath(path, root)] = hashlib.sha256(
                Path(path).read_bytes()).hexdigest()
    return state


def medfound(argv: str, world: Path, out: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m medfound ARGV` ({w}: the world folder, {o}: ``out``), as a user runs it."""
    text = argv.replace("{w}", str(world)).replace("{o}", str(out or world / "unused"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "medfound", *shlex.split(text)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=world)


def error_line(done: subprocess.CompletedProcess, command: str) -> str:
    """The one `medfound COMMAND: error:` line of a refusal (TensorFlow's start-up chatter in
    stderr is not medfound's)."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("medfound")]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"medfound {command}: error: "), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def world(shared_data, tmp_path_factory) -> Path:
    """What a hostile user points the slide commands at (written once, never changed by a case):
    a tiny module, two good slides with an annotation, and the bad inputs of each case."""
    from tests.tiny_runs import export_tiny_module

    root = tmp_path_factory.mktemp("hostile_slides")
    export_tiny_module(root / "modules", NAME, seed=5, modality="path", init="bit-m", steps=1,
                       image_size=32, data="hostile slide tests")
    breakhis = shared_data / "breakhis"
    write_slide_set(root / "slides", breakhis, n_tumor=1, n_normal=1)  # tumor_000, normal_001
    tables = root  # slide tables name slides relative to their own folder
    for name, cell in [("absolute", "/etc/passwd"), ("escaping", "../../etc/shadow"),
                       ("home", "~/slide.tif"), ("windows", "C:\\\\slides\\\\a.tif"),
                       ("climbing", "a/../../slides/tumor_000.tif")]:
        (tables / f"{name}.csv").write_text(f"slide\nslides/tumor_000.tif\n{cell}\n")
    (tables / "inside.csv").write_text("slide\nslides/tumor_000.tif\nslides/normal_001.tif\n")
    (tables / "twice.csv").write_text("slide\nslides/tumor_000.tif\n./slides/tumor_000.tif\n")
    return root


MODULE = f"--module {{w}}/modules/{NAME}"


def _embed(inputs: str, extra: str = "") -> str:
    return f"embed --slides {MODULE} --input {inputs} --out {{o}} {GEOMETRY} {extra}"


# name: (argv, what the one error line must say)
REFUSED = {
    # class 3: slide tables follow the one path rule of every medfound table
    "csv-absolute-path": (_embed("{w}/absolute.csv"),
                          ["{w}/absolute.csv, line 3", "absolute", "/etc/passwd"]),
    "csv-escaping-path": (_embed("{w}/escaping.csv"),
                          ["{w}/escaping.csv, line 3", "escapes the data root"]),
    "csv-home-path": (_embed("{w}/home.csv"), ["{w}/home.csv, line 3", "home"]),
    "csv-windows-path": (_embed("{w}/windows.csv"),
                         ["{w}/windows.csv, line 3", "absolute"]),
    "csv-climbing-path": (_embed("{w}/climbing.csv"),
                          ["{w}/climbing.csv, line 3", "escapes the data root"]),
    "csv-same-slide-twice": (_embed("{w}/twice.csv"),
                             ["{w}/twice.csv, line 3", "duplicate",
                              "slides/tumor_000.tif"]),
    "csv-root-escape-with-root": (_embed("{w}/climbing.csv", "--root {w}/slides"),
                                  ["line 3", "escapes the data root"]),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_hostile_slide_inputs_are_refused_in_one_line_changing_nothing(world, name, tmp_path):
    argv, says = REFUSED[name]
    before = snapshot(world)
    out = tmp_path / "out"
    done = medfound(argv, world, out)
    assert done.returncode == 2, done.stderr
    line = error_line(done, argv.split()[0])
    for text in says:
        assert text.replace("{w}", str(world)) in line, line
    assert snapshot(world) == before
    assert not out.exists()  # refused before anything was written


def test_a_slide_table_inside_its_root_is_embedded(world, tmp_path):
    """The path rule refuses only what leaves the root: slides named inside it are embedded."""
    out = tmp_path / "out"
    done = medfound(_embed("{w}/inside.csv"), world, out)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.glob("*.h5")) == ["normal_001.h5", "tumor_000.h5"]
    assert not (out / "failures.csv").exists()
