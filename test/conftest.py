"""Test-wide environment: DDS discovery on this machine only, and a ROS domain of this test run."""

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

# Set before any test process or child node initialises rclpy: discovery never leaves loopback, and this
# run gets a domain of its own so parallel runs do not hear each other.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))

SHARED_DATASET = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "semloc-sim-v1"


@pytest.fixture(scope="session")
def shared_dataset() -> Path:
    """The semloc-sim-v1 benchmark beside the clone (CI has it); tests needing it skip elsewhere."""
    if not (SHARED_DATASET / "splits.json").is_file():
        pytest.skip(f"benchmark not found at {SHARED_DATASET}")
    return SHARED_DATASET


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """Imports a file of scripts/ (they are not a package) as a module: ``load_script("results_tables.py")``."""
    scripts = Path(__file__).resolve().parents[1] / "scripts"

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), scripts / name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
