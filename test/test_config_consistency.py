"""config/semloc.yaml, the launch file and docs/parameters.md agree with the parameters the nodes declare; the
declared defaults are the shipped configuration; every float parameter is checked for finiteness and range."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pytest
import yaml

from semloc_ros.core.localizer import LocalizerConfig
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


def test_declared_defaults_are_the_shipped_configuration():
    """A node started without config/semloc.yaml behaves as with it (and the core's defaults are the same)."""
    config = yaml.safe_load((ROOT / "config" / "semloc.yaml").read_text())
    for node, specs in NODE_PARAMETERS.items():
        values = config[node]["ros__parameters"]
        different = {spec.name: (spec.default, values[spec.name]) for spec in specs
                     if values[spec.name] != spec.default}
        assert not different, f"{node}: declared default != config/semloc.yaml: {different}"
    shipped = config["localizer_node"]["ros__parameters"]
    assert LocalizerConfig().parameters() == {name: shipped[name] for name in localizer_node.CONFIG_PARAMETERS}


def test_localizer_declares_every_configuration_field_once():
    names = [spec.name for spec in localizer_node.PARAMETERS]
    assert len(names) == len(set(names))
    assert set(LocalizerConfig().parameters()) <= set(names)
    assert {"filter_temperature", "filter_kidnap_probability", "rerank_top_k", "rerank_shift_step"} <= set(names)


FLOAT_SPECS = [(node, spec) for node, specs in NODE_PARAMETERS.items() for spec in specs
               if isinstance(spec.default, float)]


@pytest.mark.parametrize("node, spec", FLOAT_SPECS, ids=[f"{n}.{s.name}" for n, s in FLOAT_SPECS])
def test_every_float_parameter_must_be_finite_and_in_range(node, spec):
    assert spec.problem(spec.default) is None
    for value in (math.nan, math.inf, -math.inf):
        reason = spec.problem(value)
        assert reason is not None and reason.startswith(f"{spec.name} must be"), (value, reason)
    assert spec.valid_text, "a float parameter documents its range"


@pytest.mark.parametrize("name, value", [("unknown_heading_variance", math.inf), ("unknown_altitude_m", math.nan),
                                         ("unknown_altitude_m", math.inf), ("marker_scale_m", math.inf),
                                         ("marker_scale_m", 1e9), ("database_retry_period_s", 1e300),
                                         ("filter_temperature", math.inf), ("rerank_weight", math.nan),
                                         ("covariance_along_scale", -1.0), ("top_k", 0),
                                         ("integrity_weights", [1.0, 2.0]), ("integrity_weights", [math.nan] * 6)])
def test_bad_localizer_values_are_refused_with_the_parameter_name(name, value):
    spec = next(spec for spec in localizer_node.PARAMETERS if spec.name == name)
    assert spec.problem(value).startswith(f"{name} must be")


def test_the_parameter_page_is_generated_from_the_declared_parameters(load_script):
    parameter_table = load_script("parameter_table.py")
    page = (ROOT / "docs" / "parameters.md").read_text()
    assert page == parameter_table.document(), "docs/parameters.md is stale: run python scripts/parameter_table.py"
    for node, specs in NODE_PARAMETERS.items():
        for parameter in specs:
            assert f"| {node} | `{parameter.name}` |" in page
    assert "(docs/parameters.md)" in (ROOT / "README.md").read_text()


def test_launch_file_is_valid_python_starting_all_nodes():
    source = (ROOT / "launch" / "semloc.launch.py").read_text()
    tree = ast.parse(source)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    for node in NODE_PARAMETERS:
        assert f'executable="{node}"' in source
    # parameters the launch file's arguments set (its OVERRIDES table: argument -> (node, parameter, type))
    launch_sets = re.findall(r'\("(\w+_node)", "(\w+)", \w+\)', source)
    assert launch_sets, "no parameter overrides found in the launch file"
    for node, parameter in launch_sets:
        assert parameter in {spec.name for spec in NODE_PARAMETERS[node]}, (node, parameter)


def test_package_xml_declares_the_runtime_dependencies():
    package = (ROOT / "package.xml").read_text()
    for dependency in ("rclpy", "sensor_msgs", "geographic_msgs", "geometry_msgs", "visualization_msgs",
                       "diagnostic_msgs", "std_msgs", "semloc_msgs"):
        assert f"<exec_depend>{dependency}</exec_depend>" in package or f"<depend>{dependency}</depend>" in package
