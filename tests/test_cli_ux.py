"""What a newcomer sees: a quiet start-up, help for every flag, `models` and `info` output."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfound.cli.info import describe
from medfound.cli.main import build_parser, main
from medfound.cli.quiet import filter_startup_noise
from medfound.formats.metadata import METADATA_ASSET, ModuleMetadata, read_metadata
from medfound.models.configs import ARCHITECTURES

REPO = Path(__file__).resolve().parents[1]
# Lines TensorFlow 2.21 prints on every start on a CPU-only machine (as the issue reported them).
STARTUP_NOISE = ("absl::InitializeLog", "oneDNN custom operations", "cuda drivers",
                 "cpu_feature_guard", "cuInit", "rebuild TensorFlow")


def _fresh_env() -> dict:
    """The environment of a user who set no TensorFlow log level (conftest sets one for tests)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def test_a_command_that_loads_tensorflow_starts_quietly(tmp_path):
    for i in range(2):
        Image.fromarray(np.full((32, 32), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    commands = [["--help"], ["models"],
                ["make-tfrecords", str(tmp_path), "--out", str(tmp_path / "rec"), "--shards", "1"]]
    for argv in commands:
        done = subprocess.run([sys.executable, "-m", "medfound", *argv], capture_output=True,
                              text=True, env=_fresh_env(), timeout=300)
        assert done.returncode == 0, done.stderr
        for noise in STARTUP_NOISE:
            assert noise not in done.stderr + done.stdout, (argv, done.stderr)
    assert (tmp_path / "rec" / "tfrecords.json").is_file()  # TensorFlow really ran


def test_a_user_set_log_level_is_respected_and_real_lines_are_kept():
    """The filter drops only the known start-up lines; warnings and errors stay, in order."""
    text = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            "I0000 00:00:1.1 5683 port.cc:153] oneDNN custom operations are on.\n"
            "I0000 00:00:1.2 5683 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
            "GPU will not be used.\n"
            "W0000 00:00:1.3 5683 loader.cc:9] a real warning\n"
            "E0000 00:00:1.4 5683 cuda_platform.cc:52] failed call to cuInit: INTERNAL: UNKNOWN "
            "ERROR (303)\n"
            "UserWarning: something the user must see\n")
    assert filter_startup_noise(text) == ("W0000 00:00:1.3 5683 loader.cc:9] a real warning\n"
                                          "UserWarning: something the user must see\n")
    # On a machine that has CUDA drivers, a failing cuInit is a real error and is kept.
    gpu_error = "E0000 00:00:1.4 5683 cuda_platform.cc:52] failed call to cuInit: CUDA_ERROR\n"
    assert filter_startup_noise(gpu_error) == gpu_error
    env = {**_fresh_env(), "TF_CPP_MIN_LOG_LEVEL": "0"}
    code = ("import os, sys; from medfound.cli.quiet import quiet_tensorflow_startup; "
            "quiet_tensorflow_startup(); print('tensorflow' in sys.modules, "
            "os.environ['TF_CPP_MIN_LOG_LEVEL'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout
    assert out.split() == ["False", "0"]  # untouched: the user asked for everything


def _actions(parser: argparse.ArgumentParser, prefix: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{prefix} {name}")
        else:
            yield prefix, action


def test_every_flag_of_every_command_has_help():
    missing = [f"{where} {'/'.join(a.option_strings) or a.dest}"
               for where, a in _actions(build_parser(), "medfound")
               if a.help is None or (a.help != argparse.SUPPRESS and not a.help.strip())]
    assert not missing, f"flags without help text: {missing}"
    # and every help text renders (a stray % would raise here)
    for where, _ in _actions(build_parser(), "medfound"):
        argv = where.split()[1:]
        if argv:
            sub = build_parser()._subparsers._group_actions[0].choices[argv[0]]
            assert sub.format_help()


def test_models_lists_test_architectures_under_their_own_heading(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    real, test = out.split("Test architectures", 1)
    test = test.split("REMEDIS hub modules")[0]
    assert "tiny" in test and "small" in test and "tiny" not in real
    assert "r50x1" in real and "r50x1" not in test
    assert main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {a["name"] for a in data["test_architectures"]} == {
        n for n, s in ARCHITECTURES.items() if s.test_only}
    assert "tiny" not in {a["name"] for a in data["architectures"]}


def test_info_explains_sizes_and_omits_empty_fields(tmp_path, capsys):
    meta = ModuleMetadata(name="cxr-50x1-remedis-s", arch="tiny", modality="cxr", input_size=448,
                          embedding_dim=1024, init="random", units=[1, 1, 1, 1], width=0.5,
                          pretraining_image_size=64, steps=3, test_only=True,
                          medfound_version="0")
    (tmp_path / "m" / "assets").mkdir(parents=True)
    (tmp_path / "m" / METADATA_ASSET).write_text(meta.to_json())
    assert main(["info", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert not [line for line in lines if line.rstrip().endswith(":")], out  # no empty values
    size_line = next(line for line in lines if line.startswith("input_size: 448"))
    assert "pretrained at 64 px" in size_line
    assert "not recorded: " in out and "init_data" in out.split("not recorded: ")[1]
    assert "units: 1-1-1-1" in out
    assert describe(read_metadata(tmp_path / "m"))[0].startswith("WARNING: test-only")


def test_plain_progress_lines_off_a_terminal():
    import io

    from medfound.utils.progress import PlainProgress, make_progress

    stream = io.StringIO()
    bar = PlainProgress(100, stream=stream)
    bar.update(20)  # a resumed run starts here: no line, and the ETA counts from here
    for step in (40, 40, 100):
        bar.update(step, [("loss", 4.21134), ("img/s", 312.5)])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines  # one line per step forward, none for a repeat
    assert lines[0].startswith("step 40/100 (40%)  loss 4.2113  img/s 312.5  ETA ")
    assert lines[1].startswith("step 100/100 (100%)") and "took " in lines[1]
    assert not any(c in stream.getvalue() for c in "\r\b\x1b")
    assert isinstance(make_progress(10, verbose=True), PlainProgress)  # pytest's stdout: no tty


def test_status_line_redraws_on_a_terminal_and_writes_lines_elsewhere():
    import io

    from medfound.utils.progress import StatusLine

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, expected in ((io.StringIO(), "a 1/2\na 2/2\na: failed: bad\ndone\n"),
                             (Terminal(), "\ra 1/2\ra 2/2\na: failed: bad\ndone\n")):
        status = StatusLine(stream)
        status.update("a 1/2")
        status.update("a 2/2")
        status.say("a: failed: bad")
        status.end()
        status.say("done")
        assert stream.getvalue() == expected, repr(stream.getvalue())


def test_pretrain_progress_in_a_log_is_one_readable_line_per_interval(shared_data, tmp_path,
                                                                        capsys):
    code = main(["pretrain", "--data", str(shared_data / "pneumoniamnist.npz"), "--out",
                 str(tmp_path / "run"), "--arch", "tiny", "--image-size", "32", "--batch-size",
                 "4", "--steps", "4", "--log-every", "2", "--checkpoint-every", "4"])
    assert code == 0
    out = capsys.readouterr().out
    assert not any(c in out for c in "\r\b\x1b"), repr(out[:300])
    steps = [line for line in out.splitlines() if line.startswith("step ")]
    assert [s.split()[1] for s in steps] == ["2/4", "4/4"], out
    assert "loss " in steps[0] and "img/s " in steps[0] and "ETA " in steps[0]


def test_the_test_suites_own_start_up_is_quiet():
    """conftest imports TensorFlow through the same filter, so a CI log does not end with
    TensorFlow's start-up lines after the test summary (as it did under xdist)."""
    code = "import tests.conftest, tensorflow as tf; print(len(tf.config.list_logical_devices('CPU')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_fresh_env(), cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"  # the two logical CPU devices are still made
    for noise in STARTUP_NOISE:
        assert noise not in done.stderr, done.stderr


def test_finetune_and_embed_take_strategy_and_say_why_not_multiworker(capsys):
    """The issue's `finetune --strategy mirrored` ("unrecognized arguments") now parses, into the
    config each command runs; multiworker is refused with the help text saying why."""
    from medfound.cli.finetune import config_from_args
    from medfound.embed import STRATEGIES as EMBED_STRATEGIES
    from medfound.finetune.config import STRATEGIES as FINETUNE_STRATEGIES

    parser = build_parser()
    args = parser.parse_args(["finetune", "--module", "random:tiny", "--task", "medmnist",
                              "--data", "x.npz", "--out", "run", "--strategy", "mirrored"])
    assert config_from_args(args).strategy == "mirrored"
    args = parser.parse_args(["embed", "--module", "m", "--input", "i", "--out", "o.npz",
                              "--strategy", "mirrored"])
    assert args.strategy == "mirrored"
    for command, extra, choices in (
            ("finetune", ["--module", "random:tiny", "--task", "medmnist", "--data", "x",
                          "--out", "r"], FINETUNE_STRATEGIES),
            ("embed", ["--module", "m", "--input", "i", "--out", "o.npz"], EMBED_STRATEGIES)):
        sub = parser._subparsers._group_actions[0].choices[command]
        action = next(a for a in sub._actions if a.dest == "strategy")
        assert tuple(action.choices) == choices and "multiworker" not in choices
        assert "no multiworker" in action.help
        with pytest.raises(SystemExit):
            parser.parse_args([command, *extra, "--strategy", "multiworker"])
        assert "invalid choice: 'multiworker'" in capsys.readouterr().err


def test_no_help_text_repeats_a_word():
    """'pooled embedding embedding' was in `embed --help`: every subcommand's help is read for
    a word written twice in a row."""
    import re

    from medfound.cli.main import build_parser

    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if a.choices and isinstance(a.choices, dict)]
    for name, sub in subparsers.choices.items():
        text = " ".join(sub.format_help().split())
        doubled = re.findall(r"\b([A-Za-z]{3,}) \1\b", text)
        assert not doubled, (name, doubled)
