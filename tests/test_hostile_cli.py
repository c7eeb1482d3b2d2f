"""The hostile-user catalogue (issue 14): every expected failure of a `medfound` subcommand is
one line `medfound COMMAND: error: ...` naming the file or flag, exit code 2, and nothing that
was already on disk changes (nor is anything new written).

Cases run in-process through ``medfound.cli.main.main`` (the console script's function) and are
refused before any training, so the catalogue stays fast; a few run the real entry point in a
subprocess (see the end of this file and tests/test_hostile_pretrain.py).
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfound.cli.main import main
from medfound.data.unlabeled import open_unlabeled
from medfound.pretrain import runfolder
from medfound.pretrain.config import PretrainConfig
from tests.hostile import snapshot

TINY = ["--arch", "tiny", "--image-size", "32", "--batch-size", "4", "--steps", "2", "--quiet"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Files a hostile user points the commands at (written once, never changed by a case)."""
    root = tmp_path_factory.mktemp("world")
    rng = np.random.default_rng(0)
    np.savez(root / "a.npz", train_images=rng.integers(0, 256, (16, 28, 28), dtype=np.uint8))
    np.savez(root / "b.npz", train_images=rng.integers(0, 256, (16, 28, 28), dtype=np.uint8))
    np.savez(root / "float255.npz", train_images=rng.uniform(0, 255, (8, 28, 28)))
    np.savez(root / "int16.npz",
             train_images=rng.integers(-1024, 3000, (8, 28, 28)).astype(np.int16))
    nan = rng.uniform(0, 1, (8, 28, 28)).astype(np.float32)
    nan[3, 5, 5] = np.nan
    np.savez(root / "nan.npz", train_images=nan)
    np.savez(root / "nosplit.npz", test_images=rng.integers(0, 256, (4, 28, 28), dtype=np.uint8))
    (root / "notes.txt").write_text("a file, not a folder")
    (root / "not_images").mkdir()
    (root / "not_images" / "x.png").write_text("not a png")
    (root / "not_images" / "y.jpg").write_text("not a jpeg")
    # A user's folder that is not a run (issue 14, item 1: pretraining once deleted both files).
    (root / "thesis" / "checkpoints" / "my_temp").mkdir(parents=True)
    (root / "thesis" / ".tmp-draft.txt").write_text("draft")
    (root / "thesis" / "checkpoints" / "my_temp" / "thesis.tex").write_text(r"\chapter{}")
    # A run folder as pretraining leaves it (marker, settings, history), trained on a.npz.
    run = root / "run"
    runfolder.claim(run)
    config = PretrainConfig(data=str(root / "a.npz"), out_dir=str(run), arch="tiny",
                            image_size=32, batch_size=4, steps=2)
    config.save(run / runfolder.CONFIG_FILE)
    source = open_unlabeled(root / "a.npz")
    runfolder.append_history(run, config, source, runfolder.data_fingerprint(source), 0)
    # Labels with one typo among 0/1 (item 5), beside real image files.
    (root / "labeled").mkdir()
    rows = ["path,label,patient"]
    for i, label in enumerate(["0", "1", "l", "0", "1", "0"]):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(
            root / "labeled" / f"{i}.png")
        rows.append(f"{i}.png,{label},p{i}")
    (root / "labeled" / "labels.csv").write_text("\n".join(rows) + "\n")
    # Labels beside images of which one has corrupt pixel data (native decoders name no file).
    (root / "corrupt").mkdir()
    rows = ["path,label,patient"]
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(
            root / "corrupt" / f"{i}.png")
        rows.append(f"{i}.png,{i % 2},p{i}")
    corrupt_png(root / "corrupt" / "3.png")
    (root / "corrupt" / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def corrupt_png(path: Path) -> None:
    """A PNG with a whole header and end but damaged pixel data (TensorFlow's own decoder then
    says only 'Invalid PNG data, size N')."""
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32), dtype=np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 8
    data[start:start + 40] = bytes(40)
    path.write_bytes(bytes(data))


@dataclass
class Case:
    """argv (with {w} for the world folder), the command, and what the one line must say."""

    argv: str
    says: list[str] = field(default_factory=list)

    def args(self, world: Path) -> list[str]:
        return [a.replace("{w}", str(world)) for a in shlex.split(self.argv)]


def _pretrain(data: str, out: str = "{w}/new_run", extra: str = "") -> str:
    return f"pretrain --data {data} --out {out} {' '.join(TINY)} {extra}"


CASES = {
    # pretrain: the --out folder
    "pretrain-out-is-a-file": Case(_pretrain("{w}/a.npz", "{w}/notes.txt"),
                                   ["--out {w}/notes.txt is a file"]),
    "pretrain-out-not-a-run": Case(_pretrain("{w}/a.npz", "{w}/thesis"),
                                   ["--out {w}/thesis is not empty and is not a medfound "
                                    "pretraining run", ".tmp-draft.txt"]),
    "pretrain-resume-other-data": Case(_pretrain("{w}/b.npz", "{w}/run"),
                                       ["was trained on", "a.npz", "b.npz", "fingerprint"]),
    "pretrain-resume-other-seed": Case(_pretrain("{w}/a.npz", "{w}/run", "--seed 7"),
                                       ["seed: 0 in the run, 7 now"]),
    "pretrain-resume-other-size": Case(_pretrain("{w}/a.npz", "{w}/run", "--image-size 64"),
                                       ["image_size: 32 in the run, 64 now"]),
    # pretrain: settings
    "pretrain-out-empty": Case(_pretrain("{w}/a.npz", "''"), ["--out is empty"]),
    "pretrain-data-empty": Case(_pretrain("''"), ["--data is empty"]),
    "pretrain-out-under-a-file": Case(_pretrain("{w}/a.npz", "{w}/notes.txt/run"),
                                      ["Not a directory", "{w}/notes.txt/run"]),
    "pretrain-steps-zero": Case(_pretrain("{w}/a.npz", extra="--steps 0"),
                                ["invalid pretraining configuration: steps must be >= 1"]),
    "pretrain-batch-one": Case(_pretrain("{w}/a.npz", extra="--batch-size 1"),
                               ["batch_size must be >= 2"]),
    "pretrain-lr-negative": Case(_pretrain("{w}/a.npz", extra="--learning-rate -1"),
                                 ["learning_rate must be > 0"]),
    "pretrain-arch-unknown": Case(_pretrain("{w}/a.npz", extra="--arch nope"),
                                  ["unknown architecture 'nope'"]),
    "pretrain-augment-no-equals": Case(_pretrain("{w}/a.npz", extra="--augment elastic"),
                                       ["--augment takes KEY=VALUE, got 'elastic'"]),
    "pretrain-augment-bad-range": Case(_pretrain("{w}/a.npz", extra="--augment crop_area=0,2"),
                                       ["augmentation: ", "crop_area"]),
    "pretrain-init-missing": Case(_pretrain("{w}/a.npz", extra="--init bit-m:{w}/BiT.npz"),
                                  ["init checkpoint not found: {w}/BiT.npz"]),
    "pretrain-several-problems": Case(_pretrain("{w}/a.npz", extra="--steps 0 --batch-size 1"),
                                      ["batch_size must be >= 2 (contrastive pairs need negatives), got 1; steps must be >= 1"]),
    # pretrain: the data
    "pretrain-data-missing": Case(_pretrain("{w}/absent.npz"),
                                  ["{w}/absent.npz: source not found"]),
    "pretrain-npz-without-split": Case(_pretrain("{w}/nosplit.npz"),
                                       ["{w}/nosplit.npz: no 'train_images' array"]),
    "pretrain-float-npz-0-255": Case(_pretrain("{w}/float255.npz"),
                                     ["{w}/float255.npz", "float64 with values in [",
                                      "divide by 255"]),
    "pretrain-int16-npz-negative": Case(_pretrain("{w}/int16.npz"),
                                        ["{w}/int16.npz", "int16 with values in [-10",
                                         "will not guess"]),
    "pretrain-npz-nan-pixels": Case(_pretrain("{w}/nan.npz"),
                                    ["{w}/nan.npz", "1 NaN or infinite pixel values",
                                     "image 3"]),
    "pretrain-folder-of-non-images": Case(_pretrain("{w}/not_images"),
                                          ["{w}/not_images/x.png: not a recognised image"]),
    "pretrain-skip-bad-all-bad": Case(_pretrain("{w}/not_images", extra="--skip-bad-images"),
                                      ["no usable image: all 2 files", "x.png"]),
    # quickstart
    "quickstart-data-missing": Case("quickstart --out {w}/qs --data {w}/absent.csv --quiet",
                                    ["--data {w}/absent.csv: file not found"]),
    "quickstart-data-kind": Case("quickstart --out {w}/qs --data {w}/notes.txt --quiet",
                                 ["expected a MedMNIST .npz or a labels .csv"]),
    "quickstart-steps-zero": Case("quickstart --out {w}/qs --steps 0 --quiet",
                                  ["invalid quickstart configuration: steps must be >= 1"]),
    "quickstart-out-empty": Case("quickstart --out '' --quiet", ["--out is empty"]),
    "make-tfrecords-out-empty": Case("make-tfrecords {w}/a.npz --out ''", ["--out is empty"]),
    "make-tfrecords-source-empty": Case("make-tfrecords '' --out {w}/records",
                                        ["SOURCE is empty"]),
    "quickstart-out-is-a-file": Case("quickstart --out {w}/notes.txt --quiet",
                                     ["--out {w}/notes.txt is a file"]),
    # the other commands
    "make-tfrecords-missing": Case("make-tfrecords {w}/absent --out {w}/records",
                                   ["{w}/absent: source not found"]),
    "make-tfrecords-shards-zero": Case("make-tfrecords {w}/a.npz --out {w}/records --shards 0",
                                       ["--shards must be >= 1, got 0"]),
    "export-missing": Case("export {w}/absent --out {w}/module", ["{w}/absent: no such file or folder"]),
    "export-not-a-run": Case("export {w}/thesis --out {w}/module", ["{w}/thesis"]),
    "info-missing": Case("info {w}/absent", ["{w}/absent: no such module"]),
    "publish-missing": Case("publish {w}/absent", ["{w}/absent: not a folder"]),
    "embed-no-images": Case("embed --module {w}/absent --input {w}/thesis --out {w}/e.npz",
                            ["{w}/thesis"]),
    "augment-preview-missing": Case("augment-preview {w}/absent.png --out {w}/grid.png",
                                    ["{w}/absent.png: cannot read file"]),
    "finetune-epochs-zero": Case("finetune --module random:tiny --task medmnist --data {w}/a.npz "
                                 "--out {w}/ft --epochs 0", ["epochs must be an integer >= 1"]),
    "finetune-data-option": Case("finetune --module random:tiny --task medmnist --data {w}/a.npz "
                                 "--out {w}/ft --data-option size",
                                 ["--data-option takes KEY=VALUE, got 'size'"]),
    "finetune-label-typo": Case("finetune --module random:tiny --task csv --data "
                                "{w}/labeled/labels.csv --out {w}/ft --epochs 1 --batch-size 2 "
                                "--image-size 32 --n-boot 2 --quiet",
                                ["{w}/labeled/labels.csv, line 4: label value 'l' among binary "
                                 "labels ['0', '1']", "classes="]),
    "finetune-corrupt-image": Case("finetune --module random:tiny --task csv --data "
                                   "{w}/corrupt/labels.csv --out {w}/ft --epochs 1 --batch-size 2 "
                                   "--image-size 32 --n-boot 2 --quiet",
                                   ["{w}/corrupt/3.png: truncated or corrupt image data"]),
    "finetune-corrupt-image-full": Case("finetune --module random:tiny --task csv --data "
                                        "{w}/corrupt/labels.csv --out {w}/ft --epochs 1 "
                                        "--batch-size 2 --image-size 32 --n-boot 2 --quiet "
                                        "--mode full",
                                        ["{w}/corrupt/3.png: truncated or corrupt image data"]),
    "evaluate-severities": Case("evaluate --model {w}/absent --task medmnist --data {w}/a.npz "
                                "--out {w}/ev --severities 1,x",
                                ["--severities takes numbers like 0,1,2, got '1,x'"]),
    "label-efficiency-fractions": Case("label-efficiency --modules random:tiny --fractions 1,x "
                                       "--task medmnist --data {w}/a.npz --out {w}/le",
                                       ["--fractions and --seeds take comma-separated numbers"]),
}


def run_cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    """`medfound ARGV` as the console script runs it: exit code and the stderr lines."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, [line for line in err.splitlines() if line.strip()]


def assert_refused(world: Path, case: Case, capsys) -> None:
    argv = case.args(world)
    before = snapshot(world)
    code, lines = run_cli(argv, capsys)
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"medfound {argv[0]}: error: "), lines[0]
    for text in case.says:
        assert text.replace("{w}", str(world)) in lines[0], lines[0]
    assert snapshot(world) == before  # nothing changed, nothing new


@pytest.mark.parametrize("name", list(CASES))
def test_expected_failures_are_one_line_exit_2_and_change_nothing(world, name, capsys, tmp_path,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty path option once meant this folder
    assert_refused(world, CASES[name], capsys)
    assert not list(tmp_path.iterdir())


def test_a_run_in_use_is_refused_naming_its_holder(world, capsys):
    run = world / "run"
    with runfolder.locked(run):
        assert_refused(world, Case(_pretrain("{w}/a.npz", "{w}/run"),
                                   ["--out {w}/run is in use by another medfound pretrain",
                                    f"process {os.getpid()} on "]), capsys)


def test_the_traceback_of_a_user_error_is_there_for_who_asks(world, monkeypatch):
    monkeypatch.setenv("MEDFOUND_TRACEBACK", "1")
    with pytest.raises(ValueError, match="source not found"):
        main(CASES["pretrain-data-missing"].args(world))


def test_a_bug_is_not_dressed_as_a_user_error(monkeypatch):
    import medfound.cli.models as models

    def broken(args):
        raise AttributeError("a bug")

    monkeypatch.setattr(models, "run", broken)
    with pytest.raises(AttributeError):
        main(["models"])


def test_storage_errors_name_the_file_not_the_device():
    import tensorflow as tf

    from medfound.cli.main import storage_error

    error = tf.errors.ResourceExhaustedError(
        None, None, "/tmp/run/checkpoints/ckpt-3_temp/part-00000.data; No space left on device "
                    "[Op:SaveV2] name: {{node SaveV2}} /job:localhost/replica:0/task:0/device:CPU:0}}")
    assert storage_error(error) == ("cannot write /tmp/run/checkpoints/ckpt-3_temp/"
                                    "part-00000.data: No space left on device")
    only_device = tf.errors.UnknownError(
        None, None, "No space left on device /job:localhost/replica:0/task:0/device:CPU:0}}")
    assert storage_error(only_device) == "cannot write: No space left on device"


# --- the real entry point, in a subprocess --------------------------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize("name", ["pretrain-out-not-a-run", "quickstart-steps-zero"])
def test_the_console_entry_point_prints_one_line_and_exits_2(world, name):
    case = CASES[name]
    before = snapshot(world)
    done = subprocess.run([sys.executable, "-m", "medfound", *case.args(world)],
                          capture_output=True, text=True, env=_env(), timeout=240)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("medfound")]
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    for text in case.says:
        assert text.replace("{w}", str(world)) in lines[0]
    assert snapshot(world) == before


def test_a_class_list_given_as_the_error_says_makes_the_typo_a_class(world):
    """The label-typo refusal says to pass ``classes=...``; given on the command line
    (``--data-option classes=0,1,l``, parsed to (0, 1, 'l')) it must match the text labels."""
    from medfound.cli.options import parse_key_values
    from medfound.data.labeled import load_task_splits
    from medfound.data.labeled.generic import load_csv

    options = parse_key_values(["classes=0,1,l"], "--data-option")
    assert options == {"classes": (0, 1, "l")}
    parts = load_task_splits("csv", world / "labeled" / "labels.csv", **options)
    assert {p.task for p in parts.values()} == {"multiclass"}
    assert {p.class_names for p in parts.values()} == {("0", "1", "l")}
    assert sum(len(p.labels) for p in parts.values()) == 6
    typed = load_csv(world / "labeled" / "labels.csv", classes="0,1,l")  # as a Python string
    assert typed.class_names == ("0", "1", "l") and typed.task == "multiclass"


@pytest.fixture(scope="module")
def damaged_modules(tmp_path_factory) -> Path:
    """A small real medfound module (test architecture), and copies of it with a cut-short
    variables file, a corrupt variables index and a corrupt saved_model.pb."""
    import shutil

    from medfound.export.exporter import export_module
    from tests.bit_reference import bit_random_checkpoint

    root = tmp_path_factory.mktemp("damaged")

    npz = root / "tiny.npz"  # a real (test-architecture) module, then damaged copies of it
    np.savez(npz, **bit_random_checkpoint((1, 1, 1, 1), 0.5, seed=1))
    export_module(npz, root / "whole", name="path-50x1-remedis-s", arch="tiny", init="bit-s",
                  modality="path", allow_test_arch=True)
    npz.unlink()
    data = "variables/variables.data-00000-of-00001"
    for name, file, keep in (("cut", data, 1000), ("index", "variables/variables.index", 0),
                             ("graph", "saved_model.pb", 0)):
        shutil.copytree(root / "whole", root / name)
        target = root / name / file
        target.write_bytes(target.read_bytes()[:keep] if keep else b"\x07" * 64)
    (root / "images").mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "images" / "0.png")
    splits = {f"{s}_{k}": v for s in ("train", "val", "test")
              for k, v in (("images", np.zeros((4, 28, 28), np.uint8)),
                           ("labels", np.array([[0], [1], [0], [1]])))}
    np.savez(root / "labeled.npz", **splits)
    return root


@pytest.mark.parametrize("command", ["embed", "finetune"])
@pytest.mark.parametrize("name", ["cut", "index", "graph"])
def test_a_damaged_savedmodel_is_one_line_naming_it(damaged_modules, name, command, capsys):
    module = damaged_modules / name
    before = snapshot(damaged_modules)
    out = str(damaged_modules / f"{name}-{command}")
    argv = {"embed": ["embed", "--module", str(module), "--input",
                      str(damaged_modules / "images"), "--out", out + ".npz"],
            "finetune": ["finetune", "--module", str(module), "--task", "medmnist", "--data",
                         str(damaged_modules / "labeled.npz"), "--out", out, "--epochs", "1",
                         "--quiet"]}[command]
    code, lines = run_cli(argv, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"medfound {command}: error: {module}"), lines[0]
    assert "damaged or cut short" in lines[0]
    assert snapshot(damaged_modules) == before


def test_the_undamaged_savedmodel_embeds(damaged_modules, tmp_path, capsys):
    """The copies above fail for their damage alone."""
    code, lines = run_cli(["embed", "--module", str(damaged_modules / "whole"), "--input",
                           str(damaged_modules / "images"), "--out", str(tmp_path / "e.npz")],
                          capsys)
    assert code == 0 and (tmp_path / "e.npz").is_file(), lines
