"""Options shared by several commands (one definition each)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from semloc_ros.core.views import NAMED_VIEWS, RECOMMENDED_VIEWS, SINGLE_VIEW, check_views, format_views, parse_views
from semloc_ros.ros.runner import NODES, default_params_file

DEFAULT_THREADS = min(4, os.cpu_count() or 1)
VIEW_PRESETS = NAMED_VIEWS


class _Views(argparse.Action):
    """Database views: sideways shifts (fractions of the width, distinct, in (-0.5, 0.5)) or a named set."""

    def __call__(self, parser, namespace, values, option_string=None):
        if list(values) in ([name] for name in VIEW_PRESETS):
            setattr(namespace, self.dest, list(VIEW_PRESETS[values[0]]))
            return
        try:
            views = check_views(float(value) for value in values)
        except ValueError as error:
            parser.error(f"{option_string}: {error} (or one of: {', '.join(VIEW_PRESETS)})")
        setattr(namespace, self.dest, list(views))


def add_views_argument(parser: argparse.ArgumentParser, flag: str, help_text: str,
                       default: Sequence[float] | None = SINGLE_VIEW) -> None:
    """The database-views option (``build-db --views``, ``evaluate --database-views``): shifts, or ``recommended``
    (:data:`semloc_ros.core.views.RECOMMENDED_VIEWS`)."""
    parser.add_argument(flag, nargs="+", default=None if default is None else list(default), action=_Views,
                        metavar="SHIFT", help=f"{help_text}; 'recommended' = {format_views(RECOMMENDED_VIEWS)}")


def view_set(text: str) -> tuple[float, ...]:
    """argparse type of one view set: a name (single, recommended) or comma-separated shifts."""
    try:
        return parse_views(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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


def add_trust_model_code_argument(parser: argparse.ArgumentParser) -> None:
    """``--trust-model-code``: allow model files that are programs (TorchScript, ONNX with custom operators)."""
    parser.add_argument("--trust-model-code", action="store_true",
                        help="allow segmenter files that are programs (TorchScript, ONNX with custom operators): "
                        "their code runs with your rights; only for files you trust")


def add_label_mapping_arguments(parser: argparse.ArgumentParser, segmenters: str) -> None:
    """``--label-mapping`` and ``--segmenter-arch``: how to read the user's segmenter(s) named by ``segmenters``."""
    parser.add_argument("--label-mapping", default="identity",
                        help=f"label mapping of {segmenters}: its output ids to semloc classes (identity, "
                        "cityscapes19, camvid11, camvid32 or a JSON file); the segmentation node's label_mapping")
    parser.add_argument("--segmenter-arch", default="",
                        help=f"architecture of {segmenters} when it is a plain state dict (the segmentation node's "
                        "model_arch)")
