"""The hostile-user catalogue of the whole-slide surfaces (issue 25, classes 3-7): `medfound embed
--slides` and `medfound finetune --task camelyon16-*` run as the console script runs them, in a
subprocess. A refusal is one line `medfound COMMAND: error: ...` naming the file, row or flag,
exit code 2, and nothing of the user's changes; a bad slide among good ones is listed by name in
failures.csv while the good ones are still embedded."""
from __future__ import annotations

import csv
import os
import shlex
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.hostile import snapshot

pytest.importorskip("tiffslide", reason="tiffslide (a medfound dependency) is not installed")
pytest.importorskip("tifffile", reason="tifffile (test extra) writes the test slides")

from medfound.slides.synthetic import (SET_SIZE, rect, write_asap_xml,  # noqa: E402
                                       write_pyramid, write_slide_set)

REPO = Path(__file__).resolve().parents[1]
NAME = "path-50x1-remedis-m"
GEOMETRY = "--tile-size 32 --min-tissue 0.5 --image-size 32 --quiet"


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
    bad_slides(root, shared_data)
    return root


def beside_a_good_slide(root: Path, case: str, name: str, good: Path | None = None) -> Path:
    """A folder ``mixed/CASE`` holding a copy of a good slide (default: normal_001.tif); returns
    the path the case's bad slide ``name`` gets in it."""
    folder = root / "mixed" / case
    folder.mkdir(parents=True)
    good = good or root / "slides" / "normal_001.tif"
    (folder / good.name).write_bytes(good.read_bytes())
    return folder / name


def bad_slides(root: Path, shared_data: Path) -> None:
    """One folder per per-slide case: the good slide and a bad one."""
    svs = (shared_data / "wsi" / "CMU-1-Small-Region.svs").read_bytes()
    for case, tag in [("mpp-tiny", b"0.0001"), ("mpp-negative", b"-0.499"),
                      ("mpp-nan", b"nan   "), ("mpp-inf", b"1e999 "), ("mpp-huge", b"999999")]:
        assert svs.count(b"MPP = 0.4990") == 2
        beside_a_good_slide(root, case, "cmu.svs").write_bytes(
            svs.replace(b"MPP = 0.4990", b"MPP = " + tag))
    beside_a_good_slide(root, "one-pixel", "dot.tif")
    write_pyramid(root / "mixed" / "one-pixel" / "dot.tif", np.full((1, 1, 3), 120, np.uint8),
                  levels=1)
    # The real slide has one level: 15 um/px tiles are read whole from level 0; its pyramidal
    # copy reads them from level 3, within the memory bound.
    beside_a_good_slide(root, "memory", "CMU-1-Small-Region.svs",
                        shared_data / "wsi" / "CMU-1-Small-Region-pyramid.svs").write_bytes(svs)
    # class 5: slides the reader once tripped over, named inputs that collide
    gray = np.asarray(write_slide_canvas(root)).mean(-1).astype(np.uint8)
    write_gray_pyramid(beside_a_good_slide(root, "gray", "gray.tif"), gray)
    write_gray_pyramid(beside_a_good_slide(root, "sixteen-bit", "deep.tif"),
                       gray.astype(np.uint16) * 257)
    beside_a_good_slide(root, "text", "passwd.tif").write_text(PASSWD)
    good = (root / "slides" / "normal_001.tif").read_bytes()
    for name in ("a/x.tif", "b/x.tif", "case/X.tif", "case/x.tif", "suffix/y.tif",
                 "suffix/y.svs"):
        (root / "dupes" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "dupes" / name).write_bytes(good)
    (root / "notes.txt").write_text("a file, not a folder")
    write_bag_tables(root)
    # class 6: annotations that are wrong, beside the slide they claim to annotate
    tumour = (root / "slides" / "tumor_000.tif").read_bytes()
    box = rect(128, 128, 384, 384)
    for case, xml in [
            ("xml-not-asap", "<foo/>"), ("xml-garbage", "not xml at all"),
            ("xml-nan", asap([(x, "nan" if i == 2 else y) for i, (x, y) in enumerate(box)])),
            ("xml-inf", asap([(x, "inf" if i == 1 else y) for i, (x, y) in enumerate(box)])),
            ("xml-outside", asap([(x * 1000, y * 1000) for x, y in box]))]:
        beside_a_good_slide(root, case, "tumor_000.tif").write_bytes(tumour)
        (root / "mixed" / case / "tumor_000.xml").write_text(xml)


def write_bag(path: Path, seed: int, **attrs) -> None:
    """A per-slide file as embed --slides writes it (coords, features, tumor_fraction, attrs)."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f.create_dataset("coords", data=np.stack([np.arange(6) * 128, np.zeros(6)], 1))
        f.create_dataset("features", data=rng.normal(size=(6, 8)).astype(np.float32))
        f.create_dataset("tumor_fraction", data=np.array([0, 1, 0, 1, 0, 0], np.float32))
        f.attrs.update({"slide": "", "slide_width": 768, "slide_height": 128, "mpp": 1.0,
                        "base_mpp": 0.25, "tile_size": 32, "image_size": 32,
                        "patch_size_level0": 128.0, "module": NAME, "module_sha256": "a" * 64,
                        **attrs})


def write_bag_tables(root: Path) -> None:
    """class 7: per-slide files of one module, and label tables that make no sense."""
    bags = root / "bags"
    bags.mkdir()
    names = [f"s{i}" for i in range(6)]
    for i, name in enumerate(names):
        write_bag(bags / f"{name}.h5", i)
    rows = [f"{n},{'tumor' if i % 2 else 'normal'},p{i}" for i, n in enumerate(names)]
    good = ["slide,label,patient", *rows]
    (bags / "labels.csv").write_text("\n".join(good) + "\n")
    tables = {"nan": [*good[:3], "s2,nan,p2", *good[4:]],
              "one-class": ["slide,label,patient", *[f"{n},tumor,p{i}" for i, n in
                                                     enumerate(names)]],
              "split-dev": ["slide,label,patient,split", *[
                  f"{r},{'dev' if i == 4 else ('test' if i < 2 else 'train')}"
                  for i, r in enumerate(rows)]],
              "split-partial": ["slide,label,patient,split", *[
                  f"{r},{'' if i == 5 else ('test' if i < 2 else 'train')}"
                  for i, r in enumerate(rows)]],
              "twice": [*good, rows[0]]}
    for name, lines in tables.items():
        (root / f"labels-{name}.csv").write_text("\n".join(lines) + "\n")
    for name, attrs in [("modules", {"module_sha256": "b" * 64}), ("mpp", {"mpp": 0.5})]:
        mixed = root / f"bags-two-{name}"
        mixed.mkdir()
        for i, n in enumerate(names):
            write_bag(mixed / f"{n}.h5", i, **(attrs if i == 3 else {}))
        (mixed / "labels.csv").write_text("\n".join(good) + "\n")
    for name in ("foreign", "cut"):  # class 10: a foreign or a truncated .h5 among the bags
        odd = root / f"bags-{name}"
        odd.mkdir()
        for i, n in enumerate(names):
            write_bag(odd / f"{n}.h5", i)
        (odd / "labels.csv").write_text("\n".join(good) + "\n")
    with h5py.File(root / "bags-foreign" / "s2.h5", "w") as f:
        f["images"] = np.zeros((2, 2))
    cut = root / "bags-cut" / "s2.h5"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    images = root / "images"  # the CSV task: a 'nan' among benign/malignant
    images.mkdir()
    from PIL import Image

    for i in range(6):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(images / f"{i}.png")
    labels = ["benign", "malignant", "benign", "nan", "malignant", "benign"]
    (images / "labels.csv").write_text("path,label\n" + "".join(
        f"{i}.png,{label}\n" for i, label in enumerate(labels)))


def asap(points) -> str:
    """An ASAP XML file with one tumour polygon of ``points`` (written as given)."""
    coordinates = "".join(f'<Coordinate Order="{i}" X="{x}" Y="{y}" />'
                          for i, (x, y) in enumerate(points))
    return ('<?xml version="1.0"?><ASAP_Annotations><Annotations><Annotation Name="A" '
            f'Type="Polygon" PartOfGroup="Tumor"><Coordinates>{coordinates}</Coordinates>'
            "</Annotation></Annotations></ASAP_Annotations>")


PASSWD = "root:x:0:0:root:/root:/bin/bash\n"


def write_slide_canvas(root: Path) -> np.ndarray:
    """Level 0 of the good slide normal_001.tif, as RGB."""
    import tifffile

    return tifffile.imread(root / "slides" / "normal_001.tif", level=0)


def write_gray_pyramid(path: Path, image: np.ndarray) -> None:
    """A tiled one-channel (8- or 16-bit) slide with resolution tags, as some scanners write."""
    import tifffile

    with tifffile.TiffWriter(str(path)) as tif:
        tif.write(image, tile=(64, 64), photometric="minisblack", resolution=(4e4, 4e4),
                  resolutionunit="CENTIMETER", metadata=None)


MODULE = f"--module {{w}}/modules/{NAME}"
TASK = "finetune --task camelyon16-slides --data {w}/bags --out {o} --quiet --epochs 1"


def _embed(inputs: str, extra: str = "") -> str:
    mpp = "" if "--mpp" in extra or "--magnification" in extra else "--mpp 1"
    return f"embed --slides {MODULE} --input {inputs} --out {{o}} {GEOMETRY} {mpp} {extra}"


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
    "same-name-two-folders": (_embed("{w}/dupes"), ["{w}/dupes/a/x.tif and {w}/dupes/b/x.tif",
                                                    "would both be embedded as {o}/x.h5"]),
    "same-name-two-cases": (_embed("{w}/dupes/case"), ["would both be embedded as"]),
    "same-name-two-suffixes": (_embed("{w}/dupes/suffix"), ["would both be embedded as"]),
    "out-is-a-file": (_embed("{w}/slides").replace("{o}", "{w}/notes.txt"),
                      ["--out {w}/notes.txt is a file"]),
    # class 6: an --annotations folder that cannot be the right one
    "annotations-missing": (_embed("{w}/slides", "--annotations {w}/annotationz"),
                            ["--annotations {w}/annotationz: no such folder"]),
    "annotations-is-the-xml": (_embed("{w}/slides", "--annotations {w}/slides/tumor_000.xml"),
                               ["--annotations {w}/slides/tumor_000.xml is a file"]),
    "annotations-none-match": (_embed("{w}/slides", "--annotations {w}/modules"),
                               ["--annotations {w}/modules: none of the 2 slide(s)"]),
    # class 7: label tables and features that make no sense together
    "labels-nan": (f"{TASK} --labels {{w}}/labels-nan.csv",
                   ["{w}/labels-nan.csv, line 4: label 'nan' is a missing value"]),
    "labels-one-class": (f"{TASK} --labels {{w}}/labels-one-class.csv",
                         ["{w}/labels-one-class.csv: a classification task needs at least two "
                          "classes, found ['1']"]),
    "labels-split-dev": (f"{TASK} --labels {{w}}/labels-split-dev.csv",
                         ["{w}/labels-split-dev.csv, line 6: split 'dev' is not one of"]),
    "labels-split-partial": (f"{TASK} --labels {{w}}/labels-split-partial.csv",
                             ["gives a split for 5 slide(s) but none for s5"]),
    "labels-slide-twice": (f"{TASK} --labels {{w}}/labels-twice.csv",
                           ["{w}/labels-twice.csv, line 8: duplicate slide 's0'"]),
    "features-two-modules": (TASK.replace("{w}/bags", "{w}/bags-two-modules"),
                             ["{w}/bags-two-modules/s3.h5 and {w}/bags-two-modules/s0.h5",
                              "different module_sha256"]),
    "features-foreign-h5": (TASK.replace("{w}/bags", "{w}/bags-foreign"),
                            ["{w}/bags-foreign/s2.h5: not a per-slide file", "coords"]),
    "features-cut-h5": (TASK.replace("{w}/bags", "{w}/bags-cut"),
                        ["{w}/bags-cut/s2.h5: not a readable HDF5 file"]),
    "features-two-mpp": (TASK.replace("{w}/bags", "{w}/bags-two-mpp"),
                         ["{w}/bags-two-mpp/s3.h5", "different mpp (0.5 vs 1.0)"]),
    "csv-task-nan-label": ("finetune --task csv --module random:tiny --data {w}/images/labels.csv "
                           "--out {o} --epochs 1 --image-size 32 --quiet",
                           ["{w}/images/labels.csv, line 5: label 'nan' is a missing value"]),
    "annotations-empty": (_embed("{w}/slides", "--annotations ''"), ["--annotations is empty"]),
    "root-empty": (_embed("{w}/inside.csv", "--root ''"), ["--root is empty"]),
    "labels-empty": (f"{TASK} --labels ''", ["--labels is empty"]),
    "csv-root-escape-with-root": (_embed("{w}/climbing.csv", "--root {w}/slides"),
                                  ["line 3", "escapes the data root"]),
}


NUMBERS = {  # class 4: every numeric option, checked once (medfound.slides.limits)
    "mpp-nan": ("--mpp nan", ["--mpp nan", "finite", "[0.05, 100] um/px"]),
    "mpp-zero": ("--mpp 0", ["--mpp 0.0", "[0.05, 100] um/px"]),
    "mpp-negative": ("--mpp -1", ["--mpp -1.0"]),
    "mpp-huge": ("--mpp 1000", ["--mpp 1000.0", "[0.05, 100] um/px"]),
    "mpp-inf": ("--mpp inf", ["--mpp inf"]),
    "magnification-zero": ("--magnification 0x", ["--magnification '0x'", "positive"]),
    "magnification-nan": ("--magnification nanx", ["--magnification 'nanx' is nan um/px"]),
    "magnification-tiny": ("--magnification 0.001x", ["--magnification '0.001x' is 10000 um/px",
                                                      "[0.05, 100] um/px"]),
    "magnification-word": ("--magnification twenty", ["--magnification 'twenty'"]),
    "base-mpp-zero": ("--base-mpp 0", ["--base-mpp 0.0", "[0.05, 100] um/px"]),
    "base-mpp-nan": ("--base-mpp nan", ["--base-mpp nan"]),
    "batch-size-zero": ("--batch-size 0", ["--batch-size 0", "[1, 4096]"]),
    "max-tiles-negative": ("--max-tiles -1", ["--max-tiles -1"]),
    "max-tiles-zero": ("--max-tiles 0", ["--max-tiles 0"]),
    "tile-size-zero": ("--tile-size 0", ["--tile-size 0", "[8, 4096] px"]),
    "stride-zero": ("--stride 0", ["--stride 0"]),
    "min-tissue-two": ("--min-tissue 2", ["--min-tissue 2.0", "[0, 1]"]),
    "min-tissue-nan": ("--min-tissue nan", ["--min-tissue nan"]),
    "part-size-zero": ("--part-size 0", ["--part-size 0"]),
    "image-size-tiny": ("--image-size 8", ["--image-size 8", "[32, 4096]"]),
    "all-at-once": ("--mpp nan --batch-size 0 --max-tiles -1",
                    ["--mpp nan", "; --batch-size 0", "; --max-tiles -1"]),
}
REFUSED.update({f"embed-{name}": (_embed("{w}/slides", extra), says)
                for name, (extra, says) in NUMBERS.items()})
REFUSED.update({
    "finetune-epochs-zero": (f"{TASK} --epochs 0", ["--epochs 0", "[1, 100000]"]),
    "finetune-tile-threshold-five": (f"{TASK} --tile-threshold 5", ["--tile-threshold 5.0",
                                                                   "(0, 1]"]),
    "finetune-tile-threshold-zero": (f"{TASK} --tile-threshold 0", ["--tile-threshold 0.0"]),
    "finetune-slide-models-foo": (f"{TASK} --slide-models foo",
                                  ["--slide-models 'foo'", "mean, attention"]),
    "finetune-slide-models-empty": (f"{TASK} --slide-models ,", ["--slide-models ''"]),
    "finetune-slide-models-twice": (f"{TASK} --slide-models mean,mean", ["each once"]),
    "finetune-learning-rate-nan": (f"{TASK} --learning-rate nan", ["--learning-rate nan"]),
    "finetune-batch-size-zero": (f"{TASK} --batch-size 0", ["--batch-size 0"]),
    "finetune-n-boot-negative": (f"{TASK} --n-boot -1", ["--n-boot -1"]),
})


@pytest.mark.parametrize("name", list(REFUSED))
def test_hostile_slide_inputs_are_refused_in_one_line_changing_nothing(world, name, tmp_path):
    argv, says = REFUSED[name]
    before = snapshot(world)
    out = tmp_path / "out"
    done = medfound(argv, world, out)
    assert done.returncode == 2, done.stderr
    line = error_line(done, argv.split()[0])
    for text in says:
        assert text.replace("{w}", str(world)).replace("{o}", str(out)) in line, line
    assert snapshot(world) == before
    assert not out.exists()  # refused before anything was written


def test_a_slide_table_inside_its_root_is_embedded(world, tmp_path):
    """The path rule refuses only what leaves the root: slides named inside it are embedded."""
    out = tmp_path / "out"
    done = medfound(_embed("{w}/inside.csv"), world, out)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.glob("*.h5")) == ["normal_001.h5", "tumor_000.h5"]
    assert not (out / "failures.csv").exists()


# case: (extra options, the bad slide, what its failures.csv row must say)
PER_SLIDE = {
    # class 4: resolutions read from a file, a tile's footprint, memory per slide
    "mpp-tiny": ("", "cmu.svs", ["resolution of 0.0001 um/px", "0.05-100 um/px", "--base-mpp"]),
    "mpp-negative": ("", "cmu.svs", ["resolution of -0.499 um/px"]),
    "mpp-nan": ("", "cmu.svs", ["resolution of nan um/px"]),
    "mpp-inf": ("", "cmu.svs", ["resolution of"]),
    "mpp-huge": ("", "cmu.svs", ["resolution of 999999"]),
    "one-pixel": ("", "dot.tif", ["more than the 1x1 slide"]),
    "memory": ("--mpp 15 --tile-size 64 --batch-size 128 --min-tissue 0.1", "CMU-1-Small-Region.svs",
               ["GiB bound per slide", "--batch-size"]),
}
PER_SLIDE.update({  # class 5: a slide's own failure is its own
    "sixteen-bit": ("", "deep.tif", ["pixels are uint16", "8-bit"]),
    "text": ("", "passwd.tif", ["not a readable TIFF"]),
})
PER_SLIDE.update({  # class 6: a wrong annotation fails its slide, never labels it 'no tumour'
    case: (f"--annotations {{w}}/mixed/{case}", "tumor_000.tif", ["tumor_000.xml", says])
    for case, says in [("xml-not-asap", "not an ASAP annotation file (root element <foo>"),
                       ("xml-garbage", "not a readable ASAP XML file"),
                       ("xml-nan", "not a finite number (nan or inf)"),
                       ("xml-inf", "not a finite number (nan or inf)"),
                       ("xml-outside", "lies outside the 768x512 slide")]})
GOOD = {"memory": "CMU-1-Small-Region-pyramid.h5"}


def embedded_beside(world: Path, case: str, extra: str, out: Path) -> tuple[dict, list[str]]:
    """Runs embed --slides on ``mixed/CASE``; returns failures.csv as {slide name: problem} and
    the finished .h5 names, after checking the run's exit code and that the world is as it was."""
    before = snapshot(world)
    argv = _embed("{w}/mixed/" + case, extra)
    done = medfound(argv, world, out)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert snapshot(world) == before
    failed = {}
    if (out / "failures.csv").exists():
        with open(out / "failures.csv", newline="") as f:
            failed = {Path(row["slide"]).name: row["problem"] for row in csv.DictReader(f)}
    return failed, sorted(p.name for p in out.glob("*.h5"))


@pytest.mark.parametrize("case", list(PER_SLIDE))
def test_a_bad_slide_is_listed_by_name_and_the_good_one_is_embedded(world, case, tmp_path):
    extra, bad, says = PER_SLIDE[case]
    failed, finished = embedded_beside(world, case, extra, tmp_path / "out")
    assert list(failed) == [bad], failed
    for text in says:
        assert text in failed[bad], failed[bad]
    assert "\n" not in failed[bad] and "'root" not in failed[bad]  # no file bytes quoted
    assert finished == [GOOD.get(case, "normal_001.h5")]


def test_a_gray_slide_is_embedded_beside_the_others(world, tmp_path):
    """An 8-bit one-channel slide once raised IndexError in tissue detection and stopped the
    run: it is read as gray RGB like any other."""
    failed, finished = embedded_beside(world, "gray", "", tmp_path / "out")
    assert failed == {} and finished == ["gray.h5", "normal_001.h5"]


def test_finished_work_is_keyed_by_the_slide_not_its_name(world, tmp_path):
    """A slide replaced under the same name is not served its predecessor's .h5; a copy of the
    same slide (new mtime, same bytes) is still recognised as done."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    slide = src / "s.tif"
    slide.write_bytes((world / "slides" / "tumor_000.tif").read_bytes())
    assert medfound(_embed(str(src)), world, out).returncode == 0
    first = (out / "s.h5").read_bytes()
    slide.write_bytes(slide.read_bytes())  # rewritten: new mtime, same bytes
    again = medfound(_embed(str(src)), world, out)
    assert again.returncode == 0 and "0 tiles this run" in again.stdout, again.stdout
    slide.write_bytes((world / "slides" / "normal_001.tif").read_bytes())  # another slide
    replaced = medfound(_embed(str(src)), world, out)
    assert replaced.returncode == 1, replaced.stdout  # its only slide failed
    with open(out / "failures.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["slide"]).name for r in rows] == ["s.tif"]
    assert "was embedded from another file of this name" in rows[0]["problem"]
    assert (out / "s.h5").read_bytes() == first  # kept, not silently reused or replaced
    with h5py.File(out / "s.h5") as f:
        size = (world / "slides" / "tumor_000.tif").stat().st_size
        assert f.attrs["slide_identity"].startswith(f"{size}:")


def test_a_second_embed_on_the_same_out_is_refused(world, tmp_path):
    from medfound.pretrain import runfolder

    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(out)
    with runfolder.locked(out, "embed --slides"):
        held = snapshot(out)
        done = medfound(_embed("{w}/slides"), world, out)
        assert snapshot(out) == held and set(held) - set(before) == {".medfound-run.lock"}
    assert done.returncode == 2
    line = error_line(done, "embed")
    assert f"--out {out} is in use by another medfound embed --slides (process {os.getpid()}" \
        in line, line


def test_slides_without_an_annotation_are_counted_and_named(world, tmp_path):
    """With --annotations, a slide with no <slide>.xml (a normal slide, or a typo in its name)
    gets tumour fraction 0 and is named in the summary, so the two can be told apart."""
    out = tmp_path / "out"
    done = medfound(_embed("{w}/slides", "--annotations {w}/slides"), world, out)
    assert done.returncode == 0, done.stderr
    assert f"1 slide(s) have no annotation in {world}/slides (tumor_fraction 0): normal_001.tif" \
        in done.stdout, done.stdout
    with h5py.File(out / "tumor_000.h5") as f:
        assert f["tumor_fraction"][:].max() == 1.0  # the annotated slide has its tumour


def test_validation_is_a_split_name_not_a_silently_dropped_row(world, tmp_path):
    from medfound.slides.mil import load_bags

    rows = (world / "bags" / "labels.csv").read_text().splitlines()
    names = ["test", "test", "validation", "valid", "train", "TRAIN"]
    table = tmp_path / "labels.csv"
    table.write_text("\n".join([rows[0] + ",split"] + [f"{r},{s}" for r, s in
                                                        zip(rows[1:], names)]) + "\n")
    bags, splits = load_bags(str(world / "bags"), str(table))
    assert len(bags) == 6
    assert splits == {"s0": "test", "s1": "test", "s2": "val", "s3": "val", "s4": "train",
                      "s5": "train"}
