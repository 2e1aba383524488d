"""The semloc command line: dispatch, help, argument checks."""

from __future__ import annotations

import argparse
import errno
import subprocess
import sys
from pathlib import Path

import cv2
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


def test_run_remaps_the_localizers_odometry_when_asked(monkeypatch):
    from semloc_ros.commands import run

    started = []

    class Runner:
        def __init__(self, *args, **kwargs):
            started.append(kwargs["remaps"])

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            return False

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(run, "PipelineRunner", Runner)
    assert run.main(["--odom-topic", "/odometry/filtered", "--set", "localizer_node.use_odometry=true"]) == 0
    assert run.main([]) == 0
    assert started[0]["odom"] == "/odometry/filtered" and "odom" not in started[1]

# ------------------------------------------------------------------------------------ bad input: one line
def _truncated_mcap(tmp_path: Path) -> Path:
    from rosbags.rosbag2 import StoragePlugin
    from test_datasets import write_bag

    write_bag(tmp_path / "bag", StoragePlugin.MCAP)
    data = next((tmp_path / "bag").glob("*.mcap")).read_bytes()
    truncated = tmp_path / "truncated.mcap"
    truncated.write_bytes(data[: 2 * len(data) // 3])
    return truncated


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("command", [["build-db", "--out", "x.semdb", "--untrained-ok"], ["replay"]])
def test_a_truncated_mcap_ends_a_command_with_one_line(tmp_path, capsys, command):
    bag = _truncated_mcap(tmp_path)
    code = cli.main([command[0], str(bag), *command[1:]])
    assert code != 0
    line = _one_line(capsys.readouterr().err)
    assert f"semloc {command[0]}: {bag}: cannot read the bag (truncated or corrupt?)" in line


def _random_frames(folder, count: int):
    """A folder of ``count`` random 48x32 images, all at one GPS position (gps.csv)."""
    import numpy as np

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    (folder / "gps.csv").write_text("filename,lat,lon\n" + "".join(f"{i}.png,51.75,-1.25\n" for i in range(count)))
    return folder


def test_a_full_disk_during_build_db_is_one_line_and_keeps_the_old_file(tmp_path, capsys, monkeypatch):
    import numpy as np

    folder = _random_frames(tmp_path / "frames", 3)
    out = tmp_path / "map.semdb"
    arguments = ["build-db", str(folder), "--out", str(out), "--untrained-ok", "--threads", "1", "--quiet"]
    assert cli.main(arguments) == 0
    before = out.read_bytes()
    capsys.readouterr()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    assert cli.main([*arguments, "--append"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "No space left on device" in line and "the previous file is unchanged" in line
    assert out.read_bytes() == before


def test_build_db_records_the_camera_yaw_and_appends_only_the_same_cameras_frames(tmp_path, capsys):
    import argparse

    from semloc_ros.commands.build_db import _camera_yaw_deg
    from semloc_ros.core.database import GeoDatabase
    from semloc_ros.io.datasets import Drive

    folder = _random_frames(tmp_path / "frames", 2)
    out = tmp_path / "rear.semdb"
    arguments = ["build-db", str(folder), "--out", str(out), "--untrained-ok", "--threads", "1", "--quiet"]
    assert cli.main([*arguments, "--camera-yaw-deg", "-180"]) == 0
    assert GeoDatabase.load(out).camera_yaw_deg == 180.0 and "camera yaw 180 deg" in capsys.readouterr().out
    assert cli.main([*arguments, "--append"]) == 1  # a folder records no camera: a forward one, not this map's
    assert "camera looks 180 degrees" in _one_line(capsys.readouterr().err)
    assert cli.main([*arguments, "--camera-yaw-deg", "nan"]) == 2
    assert "camera yaw" in _one_line(capsys.readouterr().err)

    def drive(yaw):
        return Drive("d", [], metadata={} if yaw is None else {"camera": {"hpr_deg": [yaw, 0.0, 0.0]}})

    options = argparse.Namespace(camera_yaw_deg=None)
    assert _camera_yaw_deg(options, [drive(180.0), drive(-180.0)]) == 180.0  # rendered rear drives: drive.json
    assert _camera_yaw_deg(options, [drive(None)]) == 0.0
    for mixed in ([drive(0.0), drive(180.0)], [drive(180.0), drive(None)]):
        with pytest.raises(ValueError, match="different directions"):
            _camera_yaw_deg(options, mixed)
    assert _camera_yaw_deg(argparse.Namespace(camera_yaw_deg=90.0), [drive(180.0)]) == 90.0


@pytest.mark.parametrize(("error", "expected"), [
    (MemoryError(), "out of memory"),
    (RecursionError("maximum recursion depth exceeded while decoding a JSON object"), "nested too deeply"),
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    (KeyError("surprise"), "KeyError: 'surprise'"),
])
def test_anything_a_command_does_not_handle_is_one_line_and_debug_shows_it(capsys, monkeypatch, error, expected):
    from semloc_ros.commands import plot

    def fail(argv):
        raise error

    monkeypatch.setattr(plot, "main", fail)
    assert cli.main(["plot", "whatever"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("semloc plot: ") and expected in line and "--debug" in line
    with pytest.raises(type(error)):
        cli.main(["--debug", "plot", "whatever"])
    with pytest.raises(type(error)):
        cli.main(["plot", "whatever", "--debug"])
