"""The one adapter to ROS 2 bags (rosbags; directory, ``.mcap`` or ``.db3``): every reader and writer of bags in
semloc (datasets, replay, record, plot, benchmark) opens them here.

- Reading: :func:`open_bag` (an ``AnyReader`` with the Kilted typestore), :func:`bag_topics`,
  :func:`header_stamp_ns` (a message's header stamp, the bag time where the header has none).
- Types: :func:`default_typestore` (Kilted) and :func:`typestore_for`, which also knows message types that
  rosbags does not ship, from their installed ``.msg`` files.
- Writing: :class:`BagWriter`, a bag of raw CDR (``write``) or typed messages (``write_message``); a single-file
  output (``.mcap``, ``.db3``) is written in a hidden directory and appears under its name only once complete.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

STORAGES = {"mcap": ".mcap", "sqlite3": ".db3"}
_BUILTIN_TYPES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
                  "uint32", "int64", "uint64", "string", "wstring"}


class BagError(ValueError):
    """A bag that cannot be read (truncated, corrupt) or written as asked, or a message type whose definition
    cannot be found."""


# ------------------------------------------------------------------------------------------------ reading
def default_typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


@contextlib.contextmanager
def open_bag(bag_path: str | Path) -> Iterator[Any]:
    """An open ``AnyReader`` over one bag (a context manager); a truncated or corrupt bag, found while opening
    or while reading, is a ``BagError`` naming the file."""
    from rosbags.highlevel import AnyReader, AnyReaderError
    from rosbags.rosbag2 import ReaderError

    try:
        with AnyReader([Path(bag_path)], default_typestore=default_typestore()) as reader:
            yield reader
    except (AnyReaderError, ReaderError) as error:
        raise BagError(f"{bag_path}: cannot read the bag (truncated or corrupt?): {error}") from error


def bag_topics(bag_path: str | Path) -> dict[str, str]:
    """Topic -> message type of a ROS 2 bag (directory, .mcap or .db3)."""
    with open_bag(bag_path) as reader:
        return {c.topic: c.msgtype for c in reader.connections}


def header_stamp_ns(msg, log_time_ns: int) -> int:
    """The message's header stamp in ns; the bag (log) time when the stamp is zero."""
    stamp = msg.header.stamp
    stamp_ns = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    return stamp_ns if stamp_ns > 0 else int(log_time_ns)


# -------------------------------------------------------------------------------------- message definitions
def _msg_file(msgtype: str) -> Path:
    """The installed ``.msg`` definition of ``pkg/msg/Name`` (ament index, else this Python's share/)."""
    package, _, name = msgtype.split("/")
    share_dirs = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        with contextlib.suppress(PackageNotFoundError):
            share_dirs.append(Path(get_package_share_directory(package)))
    except ImportError:
        pass
    share_dirs.append(Path(sys.prefix) / "share" / package)
    for share in share_dirs:
        if (path := share / "msg" / f"{name}.msg").is_file():
            return path
    raise BagError(f"no definition of {msgtype} found (looked in {[str(d) for d in share_dirs]})")


def _field_types(text: str, package: str) -> set[str]:
    """Non-builtin types used by the fields of a ``.msg`` text, as ``pkg/msg/Name``."""
    types = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        type_name = re.split(r"[\s\[<]", line, maxsplit=1)[0]  # also constants: their types are builtin
        if type_name in _BUILTIN_TYPES:
            continue
        if type_name == "Header":
            types.add("std_msgs/msg/Header")
        elif "/" in type_name:
            pkg, _, name = type_name.rpartition("/")
            types.add(f"{pkg.split('/')[0]}/msg/{name}")
        else:
            types.add(f"{package}/msg/{type_name}")
    return types


def typestore_for(msgtypes: Sequence[str]):
    """A rosbags Kilted typestore that also knows ``msgtypes`` (and their field types) from installed .msg files."""
    from rosbags.typesys import get_types_from_msg

    typestore = default_typestore()
    pending, found = list(msgtypes), {}
    while pending:
        msgtype = pending.pop()
        if msgtype in typestore.types or msgtype in found:
            continue
        text = _msg_file(msgtype).read_text()
        found.update(get_types_from_msg(text, msgtype))
        pending.extend(_field_types(text, msgtype.split("/")[0]))
    if found:
        typestore.register(found)
    return typestore


# ------------------------------------------------------------------------------------------------ writing
class BagWriter:
    """A rosbags Writer for one bag (``storage`` mcap or sqlite3); with ``single_file`` the bag is written in a
    hidden directory and its storage file moved to ``out`` by :meth:`close`."""

    def __init__(self, out: Path, storage: str = "mcap", single_file: bool = False) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.out, self.single_file = Path(out), single_file
        self.directory = self.out.with_name(f".{self.out.name}.recording") if single_file else self.out
        if self.directory.exists():
            raise BagError(f"{self.directory} exists (left by an interrupted recording?); remove it")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.writer = Writer(self.directory, version=9, storage_plugin=plugin)
        self.writer.open()
        self.typestore = default_typestore()
        self.connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def add_topic(self, topic: str, msgtype: str) -> None:
        typestore = typestore_for([msgtype])
        self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=typestore)
        self.counts[topic] = 0

    def write(self, topic: str, raw: bytes, receive_time_ns: int) -> None:
        self.writer.write(self.connections[topic], receive_time_ns, raw)
        self.counts[topic] += 1

    def write_message(self, topic: str, message, receive_time_ns: int) -> None:
        """Serialise a rosbags message object (of :attr:`typestore`'s types) and write it."""
        self.write(topic, self.typestore.serialize_cdr(message, message.__msgtype__), receive_time_ns)

    def close(self) -> Path:
        """Finalise the bag (footer/index and metadata); a single file is then moved to its name."""
        self.writer.close()
        if self.single_file:
            (storage_file,) = [p for p in self.directory.iterdir() if p.suffix in STORAGES.values()]
            os.replace(storage_file, self.out)
            shutil.rmtree(self.directory)
        return self.out
