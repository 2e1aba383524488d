"""The ``semloc`` command line: ``semloc <command> [options]``; ``semloc <command> --help`` for each.

Whatever a command does not handle itself (bad input it did not foresee: a truncated bag, a full disk, a file
that exhausts memory) ends it with one line on stderr and exit status 1, never a traceback; ``--debug``
(anywhere before ``--``) shows the traceback instead. Ctrl-C ends it with status 130.
"""

from __future__ import annotations

import importlib
import os
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
    lines += ["", "Run 'semloc <command> --help' for the options of a command; --debug shows the traceback of "
              "an error."]
    return "\n".join(lines)


def error_line(error: BaseException) -> str:
    """One line saying what went wrong, for a user rather than a developer."""
    text = " ".join(str(error).split())
    if isinstance(error, MemoryError):
        return f"out of memory ({text or 'MemoryError'}): the input is too large or malformed"
    if isinstance(error, RecursionError):
        return f"input nested too deeply ({text})"
    if isinstance(error, OSError) and error.errno is not None:
        return text  # "[Errno 28] No space left on device: 'path'"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _without_debug(argv: list[str]) -> tuple[list[str], bool]:
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end] or os.environ.get("SEMLOC_DEBUG", "") not in ("", "0")
    return [a for a in argv[:end] if a != "--debug"] + argv[end:], debug


def main(argv: list[str] | None = None) -> int:
    """Dispatch to ``semloc_ros.commands.<module>.main``."""
    argv, debug = _without_debug(list(sys.argv[1:] if argv is None else argv))
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"semloc: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(f"semloc_ros.commands.{COMMANDS[name][0]}")
        return int(module.main(rest) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"semloc {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the last line of defence: one clear line, never a traceback
        if debug:
            raise
        print(f"semloc {name}: {error_line(error)} (--debug shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
