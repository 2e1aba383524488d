"""The semloc command line: dispatch, help, argument checks."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from semloc_ros import cli
from semloc_ros.commands.common import parse_assignment
from semloc_ros.ros.runner import PipelineRunner


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_is_an_error(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_has_help(name):
    result = subprocess.run([sys.executable, "-m", "semloc_ros.cli", name, "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_parameter_assignment_is_typed_and_checked():
    assert parse_assignment("localizer_node.top_k=5") == ("localizer_node", "top_k", 5)
    assert parse_assignment("segmentation_node.device=cpu") == ("segmentation_node", "device", "cpu")
    assert parse_assignment("localizer_node.min_similarity=0.5")[2] == 0.5
    with pytest.raises(argparse.ArgumentTypeError):
        parse_assignment("nonexistent_node.top_k=5")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_assignment("top_k=5")


def test_runner_command_line_uses_params_file_overlay_and_remaps(tmp_path):
    runner = PipelineRunner(overrides={"localizer_node": {"database_path": "/x.semdb"}},
                            remaps={"image_raw": "/cam/image"}, domain_id=151)
    command = runner.command("localizer_node")
    assert command[:3] == [sys.executable, "-m", "semloc_ros.ros.localizer_node"]
    assert command[command.index("--params-file") + 1].endswith("config/semloc.yaml")
    assert "image_raw:=/cam/image" in command
    assert runner.env["ROS_DOMAIN_ID"] == "151"
    assert runner.env["ROS_AUTOMATIC_DISCOVERY_RANGE"]
