"""The module-name registry and the `medfound models` command."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from medfound.cli.main import main
from medfound.models.configs import ARCHITECTURES
from medfound.registry import HUB_MODULES, get_module_spec, module_name


def test_registry_holds_exactly_the_eight_remedis_names():
    expected = {f"{m}-{s}-remedis-{i}" for m in ("cxr", "path") for s in ("50x1", "152x2")
                for i in ("s", "m")}
    assert set(HUB_MODULES) == expected
    spec = get_module_spec("cxr-152x2-remedis-m")
    assert (spec.modality, spec.arch, spec.init, spec.input_size) == ("cxr", "r152x2", "bit-m", 448)
    assert get_module_spec("path-50x1-remedis-s").input_size == 224
    assert module_name("path", "R50x1", "bit-s") == "path-50x1-remedis-s"
    with pytest.raises(ValueError, match="valid names: cxr-50x1-remedis-s"):
        get_module_spec("cxr-50x1-remedis-x")
    with pytest.raises(ValueError, match="no REMEDIS module"):
        module_name("cxr", "r101x1", "bit-m")


def test_models_command_json_lists_architectures_and_modules(capsys):
    assert main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    archs = {a["name"]: a for a in data["architectures"]}
    assert set(archs) == {n for n, s in ARCHITECTURES.items() if not s.test_only}
    assert archs["r152x2"]["embedding_dim"] == 4096 and archs["r152x2"]["depth"] == 152
    assert archs["r50x1"]["params"] == ARCHITECTURES["r50x1"].num_params()
    assert [m["name"] for m in data["modules"]] == list(HUB_MODULES)
    assert {m["input_size"] for m in data["modules"] if m["modality"] == "cxr"} == {448}


def test_models_command_table(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "23,500,352" in out  # r50x1 parameters, as BiT counts them without the head
    for name in HUB_MODULES:
        assert name in out
    assert main(["models", "--all"]) == 0  # old scripts still work; see test_cli_ux for 'tiny'
    assert capsys.readouterr().out == out


def test_console_script_help_for_every_command():
    """`medfound --help` and each subcommand's --help work from a fresh process."""
    top = subprocess.run([sys.executable, "-m", "medfound", "--help"], capture_output=True,
                         text=True, check=True)
    # Command names sit at four spaces; wrapped help text is indented further.
    commands = re.findall(r"^    ([a-z][a-z-]*)\b", top.stdout, flags=re.M)
    assert {"models", "augment-preview", "make-tfrecords", "pretrain", "export"} <= set(commands)
    for command in commands:
        out = subprocess.run([sys.executable, "-m", "medfound", command, "--help"],
                             capture_output=True, text=True)
        assert out.returncode == 0, (command, out.stderr)
        assert "usage: medfound " + command in out.stdout
