"""launch/semloc.launch.py evaluated with minimal stand-ins for `launch` / `launch_ros` (not installable here).

The stand-ins implement only what the launch file uses (declared arguments with defaults, LaunchConfiguration
performed in a context, OpaqueFunction, Node keyword arguments), so the test checks what a real `ros2 launch`
would hand to the nodes: parameter overrides and remappings.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "semloc.launch.py"


class Context:
    def __init__(self, configurations: dict[str, str]):
        self.launch_configurations = configurations


class LaunchConfiguration:
    def __init__(self, name: str):
        self.name = name

    def perform(self, context: Context) -> str:
        return context.launch_configurations[self.name]


class Recorded:
    """DeclareLaunchArgument / OpaqueFunction / Node / IfCondition / LaunchDescription: keep their arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def fake_modules() -> dict[str, types.ModuleType]:
    modules = {name: types.ModuleType(name) for name in ("launch", "launch.actions", "launch.conditions",
                                                        "launch.substitutions", "launch_ros", "launch_ros.actions",
                                                        "ament_index_python", "ament_index_python.packages")}
    modules["launch"].LaunchDescription = Recorded
    modules["launch.actions"].DeclareLaunchArgument = Recorded
    modules["launch.actions"].OpaqueFunction = Recorded
    modules["launch.actions"].SetEnvironmentVariable = Recorded
    modules["launch.conditions"].IfCondition = Recorded
    modules["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    modules["launch_ros.actions"].Node = Recorded
    modules["ament_index_python.packages"].get_package_share_directory = lambda package: f"/share/{package}"
    return modules


def evaluate(monkeypatch, **arguments: str) -> tuple[list[Recorded], Context]:
    """The launch file's actions, and a context with its declared defaults and ``arguments`` (name:=value)."""
    for name, module in fake_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("semloc_launch_under_test", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    actions = description.args[0]
    declared = {a.args[0]: a.kwargs["default_value"] for a in actions if "default_value" in a.kwargs}
    assert set(arguments) <= set(declared), sorted(set(arguments) - set(declared))
    return actions, Context({**declared, **arguments})


def launch(monkeypatch, **arguments: str) -> dict[str, dict]:
    """Evaluate the launch file with ``arguments`` (name:=value) -> node name -> Node keyword arguments."""
    actions, context = evaluate(monkeypatch, **arguments)
    nodes = [node for a in actions if "function" in a.kwargs for node in a.kwargs["function"](context)]
    return {node.kwargs["name"]: node.kwargs for node in nodes}


def node_environment(monkeypatch, **arguments: str) -> dict[str, str]:
    """Variables set (SetEnvironmentVariable) before the nodes start -> their values in the context."""
    actions, context = evaluate(monkeypatch, **arguments)
    nodes_at = next(index for index, a in enumerate(actions) if "function" in a.kwargs)
    return {a.args[0]: a.args[1].perform(context) for a in actions[:nodes_at]
            if len(a.args) == 2 and isinstance(a.args[1], LaunchConfiguration)}


def test_defaults_leave_the_parameter_file_in_charge(monkeypatch) -> None:
    nodes = launch(monkeypatch)
    assert sorted(nodes) == ["descriptor_node", "localizer_node", "segmentation_node"]
    for kwargs in nodes.values():
        params_file, overrides = kwargs["parameters"]
        assert params_file == "/share/semloc_ros/config/semloc.yaml" and overrides == {"use_sim_time": False}
    assert dict(nodes["segmentation_node"]["remappings"]) == {
        "image_raw": "/camera/image_raw", "image_raw/compressed": "/camera/image_raw/compressed"}


def test_arguments_override_parameters_and_compressed_topic_follows_image_topic(monkeypatch) -> None:
    nodes = launch(monkeypatch, image_topic="/cam/image_raw", use_compressed="true", model="seg.onnx",
                   label_mapping="cityscapes19", fix_frame_id="gps", map_frame="semloc_map", database="r.semdb",
                   use_sim_time="true")
    assert nodes["segmentation_node"]["parameters"][1] == {
        "use_sim_time": True, "use_compressed": True, "model": "seg.onnx", "label_mapping": "cityscapes19"}
    assert nodes["localizer_node"]["parameters"][1] == {
        "use_sim_time": True, "database_path": "r.semdb", "fix_frame_id": "gps", "map_frame": "semloc_map"}
    for name in ("segmentation_node", "descriptor_node"):
        assert dict(nodes[name]["remappings"]) == {"image_raw": "/cam/image_raw",
                                                   "image_raw/compressed": "/cam/image_raw/compressed"}
    explicit = launch(monkeypatch, image_topic="/cam/image_raw", compressed_topic="/cam/jpeg")
    assert dict(explicit["segmentation_node"]["remappings"])["image_raw/compressed"] == "/cam/jpeg"
    assert launch(monkeypatch, use_compressed="False")["segmentation_node"]["parameters"][1]["use_compressed"] is False
    with pytest.raises(ValueError, match="use_compressed must be true or false"):
        launch(monkeypatch, use_compressed="yes")


def test_the_localizer_reads_odometry_from_odom_topic(monkeypatch) -> None:
    localizer = launch(monkeypatch)["localizer_node"]
    assert dict(localizer["remappings"]) == {"odom": "odom"} and "use_odometry" not in localizer["parameters"][1]
    localizer = launch(monkeypatch, use_odometry="true", odom_topic="/odometry/filtered")["localizer_node"]
    assert dict(localizer["remappings"]) == {"odom": "/odometry/filtered"}
    assert localizer["parameters"][1]["use_odometry"] is True


def test_nodes_get_the_large_frame_profile_unless_the_user_chose_one(monkeypatch) -> None:
    """Fast DDS loses best-effort frames over ~0.5 MB without config/fastdds_large_frames.xml."""
    variable = "FASTDDS_DEFAULT_PROFILES_FILE"
    monkeypatch.delenv(variable, raising=False)
    shipped = "/share/semloc_ros/config/fastdds_large_frames.xml"
    assert (LAUNCH_FILE.parents[1] / "config" / Path(shipped).name).is_file()
    assert node_environment(monkeypatch) == {variable: shipped}
    assert node_environment(monkeypatch, fastdds_profile="/etc/camera.xml") == {variable: "/etc/camera.xml"}
    monkeypatch.setenv(variable, "/etc/user.xml")  # the user's own profile wins over the shipped one
    assert node_environment(monkeypatch) == {variable: "/etc/user.xml"}
