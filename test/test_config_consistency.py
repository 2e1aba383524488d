"""config/semloc.yaml, the launch file and the README agree with the parameters the nodes declare."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from semloc_ros.ros import descriptor_node, localizer_node, segmentation_node

ROOT = Path(__file__).resolve().parents[1]
NODE_PARAMETERS = {
    "segmentation_node": segmentation_node.PARAMETERS,
    "descriptor_node": descriptor_node.PARAMETERS,
    "localizer_node": localizer_node.PARAMETERS,
}


def test_yaml_sets_every_declared_parameter_with_the_declared_type():
    config = yaml.safe_load((ROOT / "config" / "semloc.yaml").read_text())
    assert set(config) == set(NODE_PARAMETERS)
    for node, specs in NODE_PARAMETERS.items():
        values = config[node]["ros__parameters"]
        assert set(values) == {spec.name for spec in specs}, node
        for spec in specs:
            assert type(values[spec.name]) is type(spec.default), f"{node}.{spec.name}"
            if spec.check is not None:
                assert spec.check(values[spec.name]) is None, f"{node}.{spec.name}"


def test_readme_documents_every_parameter():
    readme = (ROOT / "README.md").read_text()
    for node, specs in NODE_PARAMETERS.items():
        for spec in specs:
            assert f"`{spec.name}`" in readme, f"README lacks {node}.{spec.name}"


def test_launch_file_is_valid_python_starting_all_nodes():
    source = (ROOT / "launch" / "semloc.launch.py").read_text()
    tree = ast.parse(source)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    for node in NODE_PARAMETERS:
        assert f'executable="{node}"' in source


def test_package_xml_declares_the_runtime_dependencies():
    package = (ROOT / "package.xml").read_text()
    for dependency in ("rclpy", "sensor_msgs", "geographic_msgs", "geometry_msgs", "visualization_msgs",
                       "diagnostic_msgs", "std_msgs", "semloc_msgs"):
        assert f"<exec_depend>{dependency}</exec_depend>" in package or f"<depend>{dependency}</depend>" in package
