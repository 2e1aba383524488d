"""Options shared by several commands (one definition each)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import yaml

from semloc_ros.ros.runner import NODES, default_params_file

DEFAULT_THREADS = min(4, os.cpu_count() or 1)


def view_shift(text: str) -> float:
    """argparse type of a database view: a sideways shift, as a fraction of the image width in (-0.5, 0.5)."""
    value = float(text)
    if not -0.5 < value < 0.5:
        raise argparse.ArgumentTypeError(f"{text}: a view shift is a fraction of the width in (-0.5, 0.5)")
    return value


class _DistinctViews(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        if len(set(values)) != len(values):
            parser.error(f"{option_string}: the shifts must be distinct")
        setattr(namespace, self.dest, list(values))


def add_views_argument(parser: argparse.ArgumentParser, flag: str, help_text: str) -> None:
    """The database-views option (``build-db --views``, ``evaluate --database-views``)."""
    parser.add_argument(flag, type=view_shift, nargs="+", default=[0.0], action=_DistinctViews, metavar="SHIFT",
                        help=help_text)


def parse_assignment(text: str) -> tuple[str, str, Any]:
    """argparse type of ``--set``: 'node.param=value' -> (node, param, YAML-typed value)."""
    target, separator, value = text.partition("=")
    node, dot, param = target.partition(".")
    if not separator or not dot or node not in NODES:
        raise argparse.ArgumentTypeError(f"expected NODE.PARAM=VALUE with NODE in {NODES}, got '{text}'")
    return node, param, yaml.safe_load(value)


def add_parameter_arguments(parser: argparse.ArgumentParser, params_help: str) -> None:
    """``--params-file`` (a ROS 2 parameter file of the nodes) and ``--set NODE.PARAM=VALUE`` (repeatable)."""
    parser.add_argument("--params-file", type=Path, default=None, help=params_help)
    parser.add_argument("--set", dest="assignments", action="append", type=parse_assignment, default=[],
                        metavar="NODE.PARAM=VALUE", help="override one parameter (repeatable)")


def node_parameters(params_file: Path | None, node: str) -> dict[str, Any]:
    """The ``ros__parameters`` of ``node`` in a ROS 2 parameter file (default: the shipped config/semloc.yaml).

    ValueError (one line) when the file cannot be read or has no such section. The file is data (safe YAML)."""
    path = Path(params_file) if params_file is not None else default_params_file()
    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read parameter file {path}: {error}") from error
    section = content.get(node) if isinstance(content, dict) else None
    values = section.get("ros__parameters") if isinstance(section, dict) else None
    if not isinstance(values, dict):
        raise ValueError(f"parameter file {path} has no {node}: ros__parameters: section")
    return values
