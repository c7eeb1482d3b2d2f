"""The command line offers exactly the names the library accepts: each choice list is derived from
the library's one tuple, so adding a name there adds it here (and this test fails if one is restated)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medfound.cli.main import build_parser
from medfound.data.labeled import TASKS
from medfound.evaluation.shifts import DEFAULT_SEVERITIES, SHIFT_KINDS
from medfound.finetune import config as finetune_config
from medfound.finetune.evaluate import SPLITS
from medfound.models.configs import GN_STATISTICS
from medfound.optim import LR_SCALINGS, OPTIMIZERS
from medfound.pretrain import config as pretrain_config
from medfound.registry import MODALITIES, SSL_METHODS


def _options(command: str) -> dict:
    """The subcommand's actions by their long flag."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {s: a for a in sub._actions for s in a.option_strings if s.startswith("--")}


@pytest.mark.parametrize("command, flag, expected", [
    ("pretrain", "--optimizer", OPTIMIZERS),
    ("pretrain", "--lr-scaling", LR_SCALINGS),
    ("pretrain", "--strategy", pretrain_config.STRATEGIES),
    ("pretrain", "--precision", pretrain_config.PRECISIONS),
    ("pretrain", "--method", SSL_METHODS),
    ("pretrain", "--modality", tuple(MODALITIES)),
    ("finetune", "--optimizer", OPTIMIZERS),
    ("finetune", "--mode", finetune_config.MODES),
    ("finetune", "--strategy", finetune_config.STRATEGIES),
    ("label-efficiency", "--task", TASKS),
    ("evaluate", "--task", TASKS),
    ("evaluate", "--split", SPLITS),
    ("export", "--group-norm-statistics", GN_STATISTICS),
    ("embed", "--group-norm-statistics", GN_STATISTICS),
])
def test_cli_choices_are_the_librarys(command, flag, expected):
    assert tuple(_options(command)[flag].choices) == tuple(expected)


def test_finetune_tasks_are_the_labeled_tasks_and_the_slide_tasks():
    from medfound.cli.finetune import SLIDE_TASK_CHOICES

    assert tuple(_options("finetune")["--task"].choices) == tuple(TASKS) + SLIDE_TASK_CHOICES


def test_evaluate_offers_every_shift_and_the_default_severities():
    options = _options("evaluate")
    assert all(kind in options["--shift"].help for kind in SHIFT_KINDS)
    assert tuple(float(s) for s in options["--severities"].default.split(",")) == DEFAULT_SEVERITIES


def test_pretrain_command_line_defaults_are_the_configs():
    """Parsing only the required flags gives the PretrainConfig built with only those fields."""
    from medfound.cli.pretrain import config_from_args
    from medfound.pretrain.config import PretrainConfig

    args = build_parser().parse_args(["pretrain", "--data", "d", "--out", "o"])
    assert config_from_args(args) == PretrainConfig(data="d", out_dir="o")


def test_building_the_parser_loads_no_tensorflow():
    """Choices come from modules that load without TensorFlow, so `medfound --help` stays quick."""
    code = ("import json, sys; from medfound.cli.main import build_parser; build_parser(); "
            "print(json.dumps([m for m in ('tensorflow', 'keras') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
