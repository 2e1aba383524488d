"""The ``semloc`` command line: ``semloc <command> [options]``; ``semloc <command> --help`` for each."""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "build-db": ("build_db", "build a geotagged descriptor database from a drive, image folder or rosbag"),
    "evaluate": ("evaluate", "score retrieval and localization of query drives against a database"),
    "train": ("train", "train the segmenter, the semantic descriptor or the RGB baseline"),
    "run": ("run", "start the three nodes as separate processes from a YAML file"),
    "demo": ("demo", "build the demo database and localize the embedded night drive over real DDS"),
    "replay": ("replay", "publish a ROS 2 bag's topics live with their recorded timing"),
    "record": ("record", "record the localizer's outputs into a ROS 2 bag (mcap or sqlite3)"),
    "plot": ("plot", "plot recorded fixes against the ground-truth route and the database"),
    "benchmark": ("benchmark", "measure stage latency, threads, end-to-end rate, index choice and build speed"),
}


def _usage() -> str:
    lines = ["usage: semloc <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Run 'semloc <command> --help' for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to ``semloc_ros.commands.<module>.main``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"semloc: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"semloc_ros.commands.{COMMANDS[name][0]}")
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
