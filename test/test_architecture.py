"""The package layout is the architecture: each layer imports only the layers below it, and nothing below the
ROS glue imports ROS. Every import counts, including the lazy ones inside functions."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "semloc_ros"

# layer -> the layers it may import (besides itself)
ALLOWED = {
    "core": set(),
    "models": {"core"},
    "io": {"core"},
    "mapping": {"core", "models", "io"},
    "distributed": {"core", "models", "io", "mapping"},
    "evaluation": {"core", "models", "io", "mapping"},
    "training": {"core", "models", "io", "mapping"},
    "ros": {"core", "models", "io"},
    "benchmarks": {"core", "models", "io", "mapping", "distributed", "evaluation", "ros"},
    "commands": {"core", "models", "io", "mapping", "distributed", "evaluation", "training", "ros", "benchmarks"},
    "cli": {"commands"},
}
ROS_FREE = ("core", "models", "io", "mapping", "distributed", "evaluation", "training")
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


# ------------------------------------------------------------------------------------------------ sizes
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
EXEMPT_FUNCTIONS = {"build_parser"}  # argparse builders: one statement per option
# A module or function still over a limit: "path" or "path:function" -> the size it may not grow beyond, until
# it is cut. Empty: every module and function fits.
OVERSIZED: dict[str, int] = {}


def function_sizes(path: Path) -> dict[str, int]:
    """Lines of every function and method of a module (decorators excluded), by name."""
    sizes = {}
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name not in EXEMPT_FUNCTIONS:
            sizes[node.name] = max(sizes.get(node.name, 0), node.end_lineno - node.lineno + 1)
    return sizes


def oversized(path: Path) -> list[str]:
    name = str(path.relative_to(PACKAGE))
    problems = []
    lines = len(path.read_text().splitlines())
    if lines > OVERSIZED.get(name, MAX_MODULE_LINES):
        problems.append(f"{name}: {lines} lines (limit {OVERSIZED.get(name, MAX_MODULE_LINES)})")
    for function, size in function_sizes(path).items():
        limit = OVERSIZED.get(f"{name}:{function}", MAX_FUNCTION_LINES)
        if size > limit:
            problems.append(f"{name}: {function} is {size} lines (limit {limit})")
    return problems


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_small(path):
    assert not oversized(path)


def test_the_size_check_sees_long_modules_and_functions(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    module = tmp_path / "long.py"
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    text = "def build_parser():\n" + body + "\n\ndef long():\n" + body + "\n" * MAX_MODULE_LINES
    module.write_text(text)
    assert oversized(module) == [f"long.py: {len(text.splitlines())} lines (limit 600)",
                                 f"long.py: long is {MAX_FUNCTION_LINES + 1} lines (limit 80)"]
