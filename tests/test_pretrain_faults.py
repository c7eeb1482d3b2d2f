"""Faults: `medfound pretrain` killed with SIGKILL resumes exactly; full, read-only and forbidden
file systems give one clear line instead of a traceback.

The real pretraining command runs in a subprocess on a tiny .npz; the test watches its run
directory and kills it (1) while it starts, before any checkpoint, (2) while TensorFlow writes a
checkpoint (its ``ckpt-N_temp`` folder exists) and (3) while the export files are replaced. After
every kill each listed checkpoint reads back completely and the run's JSON and weight files are
whole; the same command then resumes from the last complete checkpoint. With --deterministic the
final weights equal those of a run that was never interrupted.

Storage errors come from real small file systems: tmpfs mounts made in a user + mount namespace
(no root needed where unprivileged namespaces are allowed) and reached from this process through
``/proc/PID/root`` of the process holding them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import medfound
from medfound.cli.main import main
from medfound.pretrain.config import PretrainConfig
from medfound.runinfo import BACKBONE_WEIGHTS, RunInfo

STEPS = 6
ARGS = ["--arch", "tiny", "--image-size", "32", "--batch-size", "4", "--steps", str(STEPS),
        "--checkpoint-every", "1", "--keep-checkpoints", "2", "--log-every", "1", "--seed", "3",
        "--deterministic", "--quiet"]
TIMEOUT_S = 240


def _command(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "medfound.cli.main", "pretrain", "--data", str(data),
            "--out", str(out), *ARGS]


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def _start(command: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_env())


def _kill_when(command: list[str], log: Path, moment: Callable[[], bool]) -> None:
    """Runs ``command`` and SIGKILLs it as soon as ``moment()`` holds (polled every 0.5 ms)."""
    proc = _start(command, log)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not moment():
            if proc.poll() is not None:
                pytest.fail(f"the run ended (exit {proc.returncode}) before the moment to kill "
                            f"it:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no moment to kill the run within {TIMEOUT_S} s")
            time.sleep(0.0005)
    finally:
        proc.kill()  # SIGKILL
        proc.wait()
    assert proc.returncode == -9


def _entries(folder: Path) -> list[str]:
    try:
        return [entry.name for entry in os.scandir(folder)]
    except FileNotFoundError:
        return []


def _checkpoint_steps(run_dir: Path) -> list[int]:
    state = tf.train.get_checkpoint_state(str(run_dir / "checkpoints"))
    if state is None:
        return []
    return [int(path.rsplit("-", 1)[1]) for path in state.all_model_checkpoint_paths]


def _assert_complete(run_dir: Path, backbone) -> int:
    """Every file a killed run leaves reads back whole; returns the last checkpointed step."""
    steps = _checkpoint_steps(run_dir)
    state = tf.train.get_checkpoint_state(str(run_dir / "checkpoints"))
    if state is not None:
        assert state.model_checkpoint_path == state.all_model_checkpoint_paths[-1]
        for path in state.all_model_checkpoint_paths:
            reader = tf.train.load_checkpoint(path)
            for name in reader.get_variable_to_shape_map():
                reader.get_tensor(name)  # every tensor, checksummed
            status = tf.train.Checkpoint(backbone=backbone).read(path)
            status.assert_existing_objects_matched()
            status.expect_partial()
    if (run_dir / "config.json").exists():
        PretrainConfig.load(run_dir / "config.json").validate()
    if (run_dir / "run.json").exists():
        info = RunInfo.load(run_dir)
        assert info.steps <= (steps[-1] if steps else 0) and info.arch == "tiny"
    if (run_dir / BACKBONE_WEIGHTS).exists():
        backbone.load_weights(run_dir / BACKBONE_WEIGHTS)
    return steps[-1] if steps else 0


def _weights(path: Path, backbone) -> list[np.ndarray]:
    backbone.load_weights(path)
    return [w.copy() for w in backbone.get_weights()]


@pytest.fixture
def data(tmp_path) -> Path:
    images = np.random.default_rng(0).integers(0, 256, (24, 28, 28), dtype=np.uint8)
    path = tmp_path / "tiny.npz"
    np.savez(path, train_images=images)
    return path


@pytest.mark.slow
def test_killed_runs_resume_from_the_last_complete_checkpoint(tmp_path, data):
    run_dir = tmp_path / "run"
    command = _command(data, run_dir)
    # The uninterrupted run, alongside (a second process on a second core).
    reference = _start(_command(data, tmp_path / "straight"), tmp_path / "straight.log")
    backbone = medfound.build_backbone("tiny")
    try:
        # 1. While starting: the configuration is saved, no step has been checkpointed yet.
        _kill_when(command, tmp_path / "kill1.log", lambda: (run_dir / "config.json").exists())
        assert _assert_complete(run_dir, backbone) == 0

        # 2. While TensorFlow writes a checkpoint (into its ckpt-N_temp folder).
        writing: list[str] = []

        def checkpoint_being_written() -> bool:
            writing[:] = [n for n in _entries(run_dir / "checkpoints") if n.endswith("_temp")]
            return bool(writing)

        for attempt in range(3):  # a save takes milliseconds: retry if the kill came too late
            _kill_when(command, tmp_path / f"kill2-{attempt}.log", checkpoint_being_written)
            left = [n for n in _entries(run_dir / "checkpoints") if n.endswith("_temp")]
            last = _assert_complete(run_dir, backbone)
            if left:
                break
        assert left, "never killed during a checkpoint write"
        interrupted = int(left[0].split("-")[1].split("_")[0])
        assert last == interrupted - 1  # the half-written one is not listed

        # 3. While the export files are replaced, just after the next checkpoint.
        def export_being_written() -> bool:
            return any(n.startswith(".tmp-") and n.endswith(BACKBONE_WEIGHTS)
                       for n in _entries(run_dir))

        _kill_when(command, tmp_path / "kill3.log", export_being_written)
        resumed = _assert_complete(run_dir, backbone)
        assert resumed == last + 1  # resumed from `last`, not from scratch

        # 4. The same command finishes the run from the last complete checkpoint.
        done = subprocess.run(command, capture_output=True, text=True, env=_env(),
                              timeout=TIMEOUT_S)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"steps: {STEPS} (resumed from {resumed})" in done.stdout
        assert _assert_complete(run_dir, backbone) == STEPS
        assert RunInfo.load(run_dir).steps == STEPS
        assert reference.wait(timeout=TIMEOUT_S) == 0, (tmp_path / "straight.log").read_text()
    finally:
        reference.kill()
        reference.wait()
    # Deterministic: the resumed run ends with exactly the uninterrupted run's weights.
    final = _weights(run_dir / BACKBONE_WEIGHTS, backbone)
    straight = _weights(tmp_path / "straight" / BACKBONE_WEIGHTS, backbone)
    assert len(final) == len(straight)
    for a, b in zip(final, straight):
        np.testing.assert_array_equal(a, b)
    assert json.loads((run_dir / "run.json").read_text())["steps"] == STEPS


# --- storage errors ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_file_systems(tmp_path_factory):
    """{'read-only', 'no-inodes', '16k'}: tmpfs mounts (read-only; no free inode; 16 KiB) held by
    a process in its own user + mount namespace, as paths this process can use."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    base = tmp_path_factory.mktemp("mounts")
    options = {"read-only": "ro", "no-inodes": "nr_inodes=1", "16k": "size=16k"}
    mounts = " && ".join(f"mkdir -p {base / name} && mount -t tmpfs -o {opts} tmpfs "
                         f"{base / name}" for name, opts in options.items())
    holder = subprocess.Popen(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
         f"{mounts} && echo ready && exec sleep 600"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = holder.stdout.readline().strip()
    if line != "ready":
        holder.kill()
        holder.wait()
        pytest.skip(f"cannot mount a small file system without privileges here: {line}")
    root = Path(f"/proc/{holder.pid}/root")
    try:
        paths = {name: root / (base / name).relative_to("/") for name in options}
        os.listdir(paths["16k"])
    except OSError as err:
        holder.kill()
        holder.wait()
        pytest.skip(f"cannot reach the namespace's mounts through {root}: {err}")
    yield paths
    holder.kill()
    holder.wait()


def _one_line_error(capfd, argv: list[str]) -> str:
    """Runs `medfound ARGV` as the console script does; returns its one stderr line."""
    assert main(argv) == 2
    captured = capfd.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert "Traceback" not in captured.err and len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize("where, reason", [("read-only", "Read-only file system"),
                                           ("no-inodes", "No space left on device")])
def test_a_file_system_that_refuses_writes_is_named_in_one_line(data, small_file_systems, where,
                                                               reason, capfd):
    out = small_file_systems[where] / "records"
    line = _one_line_error(capfd, ["make-tfrecords", str(data), "--out", str(out)])
    assert line == f"medfound make-tfrecords: error: cannot write {out}: {reason}"


def test_a_disk_filling_up_during_a_tensorflow_write_is_one_line(data, small_file_systems,
                                                                 capfd):
    out = small_file_systems["16k"] / "records"
    line = _one_line_error(capfd, ["make-tfrecords", str(data), "--out", str(out),
                                   "--shards", "1"])
    assert line.startswith(f"medfound make-tfrecords: error: cannot write {out}/")
    assert line.endswith(".tfrecord: No space left on device")


def test_a_folder_without_write_permission_is_named_in_one_line(data, tmp_path, capfd):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    out = locked / "records"
    argv = ["make-tfrecords", str(data), "--out", str(out)]
    try:
        if os.geteuid() != 0:
            line = _one_line_error(capfd, argv)
        else:  # root ignores permissions unless it gives up the capabilities that let it
            if shutil.which("setpriv") is None:
                pytest.skip("running as root, which ignores file permissions, without setpriv "
                            "to drop that power")
            done = subprocess.run(
                ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable,
                 "-m", "medfound.cli.main", *argv],
                capture_output=True, text=True, env=_env(), timeout=TIMEOUT_S)
            assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
            lines = [text for text in done.stderr.splitlines() if text.startswith("medfound")]
            assert len(lines) == 1, done.stderr
            line = lines[0]
    finally:
        locked.chmod(0o700)
    assert line == f"medfound make-tfrecords: error: cannot access {out}: Permission denied"
