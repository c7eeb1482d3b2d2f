"""Pretraining under a hostile user (issue 14): the cases that need real (tiny) training runs.

Resuming on other data or settings, diverging, a kill between the last checkpoint and the
export files, Ctrl-C, and a bad file that is skipped once, not read again every epoch.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import medfound
from medfound.cli.main import main
from medfound.pretrain import runfolder
from medfound.runinfo import BACKBONE_WEIGHTS, RunInfo
from tests.test_hostile_cli import corrupt_png, snapshot

TINY = ["--arch", "tiny", "--image-size", "32", "--batch-size", "4", "--checkpoint-every", "1",
        "--log-every", "1", "--quiet"]


@pytest.fixture
def data(tmp_path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    paths = {}
    for name in ("a", "b"):
        paths[name] = tmp_path / f"{name}.npz"
        np.savez(paths[name], train_images=rng.integers(0, 256, (16, 28, 28), dtype=np.uint8))
    return paths


def pretrain_cli(capsys, data: Path, out: Path, *extra: str) -> tuple[int, str, list[str]]:
    capsys.readouterr()
    code = main(["pretrain", "--data", str(data), "--out", str(out), *TINY, *extra])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def test_a_resume_checks_data_and_settings_and_keeps_a_history(tmp_path, data, capsys):
    run = tmp_path / "run"
    assert pretrain_cli(capsys, data["a"], run, "--steps", "2")[0] == 0
    config = (run / "config.json").read_text()
    before = snapshot(run)
    code, _, err = pretrain_cli(capsys, data["b"], run, "--steps", "3")
    assert code == 2 and len(err) == 1
    assert "npz 'a.npz'" in err[0] and "npz 'b.npz'" in err[0] and "was trained on" in err[0]
    code, _, err = pretrain_cli(capsys, data["a"], run, "--steps", "3", "--seed", "7")
    assert code == 2 and err == [f"medfound pretrain: error: --out {run} holds a run with other "
                                 "settings (seed: 0 in the run, 7 now); resume it with the same "
                                 "settings or give a new --out"]
    assert snapshot(run) == before  # refused resumes change nothing, the lock included
    # The same data under another path (a moved copy) is the same data.
    moved = tmp_path / "moved" / "a.npz"
    moved.parent.mkdir()
    shutil.copy(data["a"], moved)
    code, out, _ = pretrain_cli(capsys, moved, run, "--steps", "3")
    assert code == 0 and "steps: 3 (resumed from 2)" in out
    assert (run / "config.json").read_text() == config  # the settings as first given
    history = runfolder.read_history(run)
    assert [(h["from_step"], h["to_step"]) for h in history] == [(0, 2), (2, 3)]
    assert [h["settings"]["data"] for h in history] == [str(data["a"]), str(moved)]
    assert history[0]["data_fingerprint"] == history[1]["data_fingerprint"]


def _listed(run: Path) -> list[str]:
    state = tf.train.get_checkpoint_state(str(run / "checkpoints"))
    return [Path(p).name for p in state.all_model_checkpoint_paths]


def test_divergence_stops_at_once_and_keeps_the_last_finite_checkpoint(tmp_path, data, capsys):
    run = tmp_path / "run"
    code, _, err = pretrain_cli(capsys, data["a"], run, "--steps", "8", "--learning-rate", "1e30",
                                "--warmup-fraction", "0")
    assert code == 2 and len(err) == 1
    assert err[0].startswith("medfound pretrain: error: training diverged: non-finite loss or "
                             "weights at step ")
    assert "--learning-rate (now 1e+30)" in err[0]
    step = int(err[0].split("at step ")[1].split(";")[0])
    backbone = medfound.build_backbone("tiny")
    listed = _listed(run) if (run / "checkpoints" / "checkpoint").exists() else []
    assert all(int(name.split("-")[1]) < step for name in listed)
    for name in listed:  # every checkpoint kept is finite
        reader = tf.train.load_checkpoint(str(run / "checkpoints" / name))
        for key in reader.get_variable_to_shape_map():
            value = reader.get_tensor(key)
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                assert np.isfinite(value).all(), key
    if (run / BACKBONE_WEIGHTS).exists():
        backbone.load_weights(run / BACKBONE_WEIGHTS)
        assert all(np.isfinite(w).all() for w in backbone.get_weights())


def test_a_resume_with_nothing_to_train_finishes_the_outputs(tmp_path, data, capsys,
                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = Path("run")  # relative, as users type it: checkpoint paths are then relative too
    assert pretrain_cli(capsys, data["a"], run, "--steps", "1", "--keep-checkpoints", "1")[0] == 0
    step1 = tmp_path / "step1"
    shutil.copytree(run, step1)
    assert pretrain_cli(capsys, data["a"], run, "--steps", "2", "--keep-checkpoints", "1")[0] == 0
    final = (run / BACKBONE_WEIGHTS).read_bytes()
    assert _listed(run) == ["ckpt-2"] and not (run / "checkpoints" / "ckpt-1.index").exists()
    # As after a kill between TensorFlow's sweep of ckpt-1 and the export files: the export
    # files of step 1, and a state file still listing the deleted ckpt-1.
    for name in (BACKBONE_WEIGHTS, "run.json"):
        shutil.copy(step1 / name, run / name)
    runfolder.write_checkpoint_state(run / "checkpoints", ["ckpt-1", "ckpt-2"])
    assert _listed(run) == ["ckpt-1", "ckpt-2"]
    code, out, _ = pretrain_cli(capsys, data["a"], run, "--steps", "2", "--keep-checkpoints", "1")
    assert code == 0 and "steps: 2 (resumed from 2)" in out
    assert RunInfo.load(run).steps == 2 and _listed(run) == ["ckpt-2"]
    backbone = medfound.build_backbone("tiny")
    backbone.load_weights(run / BACKBONE_WEIGHTS)
    reference = medfound.build_backbone("tiny")
    (tmp_path / "final.weights.h5").write_bytes(final)
    reference.load_weights(tmp_path / "final.weights.h5")
    for a, b in zip(backbone.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)
    # As after a kill before the sweep: ckpt-1's files are still there, unlisted (an orphan).
    for file in (step1 / "checkpoints").glob("ckpt-1.*"):
        shutil.copy(file, run / "checkpoints" / file.name)
    assert pretrain_cli(capsys, data["a"], run, "--steps", "2", "--keep-checkpoints", "1")[0] == 0
    assert not list((run / "checkpoints").glob("ckpt-1.*"))


def test_a_file_that_failed_is_never_read_again(tmp_path):
    from PIL import Image

    from medfound.data.images import SkippedFiles, image_dataset

    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_text("not a png")
    skipped = SkippedFiles()
    images = list(image_dataset([good, bad] * 5, skip_errors=True, on_error=skipped,
                                num_parallel_calls=1))
    assert len(images) == 5
    assert skipped.items == [(str(bad), skipped.items[0][1])]  # once, not five times


def test_ctrl_c_prints_one_line_saying_the_run_resumes_and_exits_130(tmp_path, data):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "medfound", "pretrain", "--data", str(data["a"]), "--out",
               str(run), *TINY, "--steps", "100000"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        deadline = time.monotonic() + 240
        while not (run / runfolder.HISTORY_FILE).exists():  # written just before training
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run did not start within 240 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("medfound")]
    assert lines == ["medfound pretrain: interrupted; run the same command again to resume from "
                     "the last checkpoint"]
    assert json.loads((run / runfolder.LOCK_FILE).read_text() or "{}") == {}  # lock let go


@pytest.mark.parametrize("kind", ["not-an-image", "corrupt-pixel-data"])
def test_a_bad_file_in_the_middle_of_a_folder_is_named(tmp_path, capsys, kind):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(7):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(folder / f"{i}.png")
    bad = folder / "5.png"  # not the first file: the start-up check passes
    if kind == "not-an-image":
        bad.write_text("not a png")
    else:
        corrupt_png(bad)
    code, _, err = pretrain_cli(capsys, folder, tmp_path / "run", "--steps", "4")
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"medfound pretrain: error: {bad}: ")
    assert "--skip-bad-images" in err[0]


def test_the_first_ctrl_c_waits_for_a_step_boundary_and_a_second_one_does_not():
    """A KeyboardInterrupt raised inside TensorFlow's C++ callbacks (tf.data building, tracing)
    came out as an unrelated ValueError with a traceback and exit 2; the first Ctrl-C is
    therefore held until the training loop checks it."""
    from medfound.interrupts import interrupt_between_steps

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with interrupt_between_steps() as check:
            check()  # nothing pressed yet
            signal.raise_signal(signal.SIGINT)
            tf.data.Dataset.range(3).map(lambda x: x + 1)  # not interrupted here
            with pytest.raises(KeyboardInterrupt):
                check()
            signal.raise_signal(signal.SIGINT)  # a second Ctrl-C: at once
            raise AssertionError("the second Ctrl-C was held too")
    assert signal.getsignal(signal.SIGINT) is before
