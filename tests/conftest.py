"""Shared test set-up: two logical CPU devices (for multi-replica tests) and the real data folder."""
from __future__ import annotations

import os
from pathlib import Path

if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
    # TensorFlow's start-up lines (cuInit on a CPU-only machine, oneDNN, ...) ignore the log
    # level and, under xdist, were the last lines after the test summary: filter them as the
    # commands do. Errors only (level 2), here and in the tests' subprocesses, as before.
    from medfound.cli.quiet import quiet_tensorflow_startup

    quiet_tensorflow_startup(level="2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

# Split the CPU into two logical devices before TensorFlow initialises them, so that
# MirroredStrategy tests run two real replicas on this machine.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])


def shared_data_dir() -> Path:
    """Where the real medical test images live: $MEDFOUND_TEST_DATA or ../shared/data."""
    return Path(os.environ.get("MEDFOUND_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder; tests using it skip, saying why, on a machine without it."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real test data not found at {path} (set MEDFOUND_TEST_DATA); CI has it")
    return path


@pytest.fixture(scope="session")
def two_replica_strategy() -> tf.distribute.MirroredStrategy:
    """A MirroredStrategy over the two logical CPU devices."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
