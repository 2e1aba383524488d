"""The package layout is the architecture: each layer imports only the layers below it, and nothing below the
ROS glue imports ROS. Every import counts, including the lazy ones inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "semloc_ros"

# layer -> the layers it may import (besides itself)
ALLOWED = {
    "core": set(),
    "models": {"core"},
    "io": {"core"},
    "mapping": {"core", "models", "io"},
    "evaluation": {"core", "models", "io", "mapping"},
    "training": {"core", "models", "io", "mapping"},
    "ros": {"core", "models", "io"},
    "benchmarks": {"core", "models", "io", "mapping", "evaluation", "ros"},
    "commands": {"core", "models", "io", "mapping", "evaluation", "training", "ros", "benchmarks"},
    "cli": {"commands"},
}
ROS_FREE = ("core", "models", "io", "mapping", "evaluation", "training")
ROS_MODULES = ("rclpy", "sensor_msgs", "geographic_msgs", "semloc_msgs", "diagnostic_msgs", "visualization_msgs",
               "nav_msgs", "std_msgs", "builtin_interfaces", "geometry_msgs", "tf2_msgs", "rosidl_runtime_py")


def layer_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def imported_modules(path: Path) -> list[str]:
    """Every module an import statement in the file names (absolute imports; the package uses no relative ones)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names.append(node.module or "")
            if node.module == "semloc_ros":
                names += [f"semloc_ros.{alias.name}" for alias in node.names]
    return names


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_module_belongs_to_a_layer():
    assert {layer_of(p) for p in MODULES} <= set(ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_layers_import_only_downwards(path):
    layer = layer_of(path)
    for name in imported_modules(path):
        if not name.startswith("semloc_ros.") or name == "semloc_ros.__version__":
            continue
        target = name.split(".")[1]
        if target in ("__init__",):
            continue
        assert target == layer or target in ALLOWED[layer], f"{path.name} ({layer}) imports {name}"
        if layer == "commands" and target == "commands":
            assert name == "semloc_ros.commands.common", f"{path.name}: commands import only the shared options"


@pytest.mark.parametrize(
    "path", [p for p in MODULES if layer_of(p) in ROS_FREE], ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_nothing_below_the_ros_glue_imports_ros(path):
    for name in imported_modules(path):
        assert name.split(".")[0] not in ROS_MODULES, f"{path.name} imports {name}"


def test_the_checks_see_lazy_imports(tmp_path):
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    import rclpy\n    from semloc_ros.ros import runner\n")
    assert imported_modules(module) == ["rclpy", "semloc_ros.ros"]
