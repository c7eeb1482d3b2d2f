"""A quiet TensorFlow start-up for the `medfound` commands.

TensorFlow's C++ core logs 5-9 lines on every start (oneDNN, CPU features, "Could not find cuda
drivers", and on a CPU-only machine ``failed call to cuInit: ... UNKNOWN ERROR (303)``). Some are
printed before absl's logging is initialised and so ignore ``TF_CPP_MIN_LOG_LEVEL``. The
commands that need TensorFlow therefore import it (and list its devices) once, up front, with
the process's stderr captured; the known start-up lines are dropped and everything else
(real warnings and errors) is written back to stderr unchanged.

A user who sets ``TF_CPP_MIN_LOG_LEVEL`` themselves gets exactly what they asked for: nothing is
captured or filtered then.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LOG_LEVEL = "1"  # C++ INFO off; warnings and errors stay

# Lines TensorFlow prints on every start that say nothing about the user's run.
_NOISE = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called"),
    re.compile(r"^I\d{4} .*\] "),  # any C++ INFO line (absl format: I<mmdd> <time> <tid> file:line])
    re.compile(r"^To enable the following instructions: .* rebuild TensorFlow"),
)
# Printed on a machine without CUDA drivers; noise only when TensorFlow also said so.
_NO_DRIVER = re.compile(r"Could not find cuda drivers on your machine")
_CUINIT = re.compile(r"^E\d{4} .*failed call to cuInit")


def filter_startup_noise(text: str) -> str:
    """``text`` without TensorFlow's start-up lines; every other line is kept as it was."""
    lines = text.splitlines(keepends=True)
    no_driver = any(_NO_DRIVER.search(line) for line in lines)
    kept = [line for line in lines
            if not any(p.search(line) for p in _NOISE)
            and not (no_driver and _CUINIT.search(line))]
    return "".join(kept)


def quiet_tensorflow_startup(level: str = QUIET_LOG_LEVEL) -> None:
    """Imports TensorFlow and initialises its devices with the start-up lines filtered out,
    TensorFlow's C++ log level set to ``level`` (the test suite uses "2": errors only).

    Does nothing when TensorFlow is already imported (tests, notebooks) or when the user set
    ``TF_CPP_MIN_LOG_LEVEL``.
    """
    if "tensorflow" in sys.modules or LOG_LEVEL_VARIABLE in os.environ:
        return
    os.environ[LOG_LEVEL_VARIABLE] = level
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # cuInit happens here, not at import
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            rest = filter_startup_noise(captured.read().decode("utf-8", "replace"))
            if rest:
                sys.stderr.write(rest)
                sys.stderr.flush()
