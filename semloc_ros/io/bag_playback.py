"""ROS-free core of ``semloc replay``: a bag's messages in time order, scheduled for playback (rosbags).

- :class:`BagSource` reads the raw CDR messages of a ROS 2 bag (directory, ``.mcap`` or ``.db3``), ordered by
  bag (receive) time, optionally only some topics and from some time on; nothing is deserialised.
- :func:`schedule` turns a source into ``(due time, message)`` items for a playback ``rate``, a
  ``start_offset_s`` into the bag and ``loop``: each loop is read again from the bag, so memory stays flat.
- :func:`play` waits for each item's due time on a monotonic clock and hands it to a publish callback; the
  clock, sleep and stop test are parameters, so pacing is testable without ROS and without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

NS_PER_S = 1_000_000_000
DUE_TOLERANCE_S = 1e-6  # a message this close to its due time is published (no sub-microsecond sleeps)


class PlaybackError(ValueError):
    """Bad playback options or a bag that cannot be played."""


@dataclass(frozen=True)
class BagMessage:
    """One message as stored in the bag: raw CDR bytes, never deserialised here."""

    topic: str
    msgtype: str
    log_time_ns: int
    raw: bytes


@dataclass(frozen=True)
class Scheduled:
    """A message with the time it is due, in seconds after the start of playback."""

    due_s: float
    loop: int
    message: BagMessage

    @property
    def bag_time_ns(self) -> int:
        return self.message.log_time_ns


class MessageSource(Protocol):
    """What :func:`schedule` plays: a start time and messages ordered by time from a given time on."""

    @property
    def start_ns(self) -> int: ...

    def messages(self, start_ns: int) -> Iterable[BagMessage]: ...


def _normalise(topic: str) -> str:
    return topic if topic.startswith("/") else "/" + topic


def parse_remap(rule: str) -> tuple[str, str]:
    """``OLD:=NEW`` -> ``("/OLD", "/NEW")`` (topic names made absolute)."""
    old, separator, new = rule.partition(":=")
    if not separator or not old.strip() or not new.strip():
        raise PlaybackError(f"expected OLD:=NEW, got {rule!r}")
    return _normalise(old.strip()), _normalise(new.strip())


class BagSource:
    """The messages of a ROS 2 bag, restricted to ``topics`` (all when None), ordered by bag time.

    ``start_ns`` is the time of the bag's first message (of any topic): ``--start-offset`` counts from there,
    as in ``ros2 bag play``.
    """

    def __init__(self, bag_path: str | Path, topics: Collection[str] | None = None) -> None:
        from semloc_ros.io.bags import bag_topics

        self.bag_path = Path(bag_path)
        if not self.bag_path.exists():
            raise PlaybackError(f"{bag_path}: no such bag")
        all_topics = bag_topics(self.bag_path)
        wanted = None if topics is None else {_normalise(t) for t in topics}
        if wanted is not None and (missing := sorted(wanted - set(all_topics))):
            raise PlaybackError(f"{bag_path}: no topic(s) {missing}; the bag has {sorted(all_topics)}")
        self.topics = {t: m for t, m in sorted(all_topics.items()) if wanted is None or t in wanted}
        with self._reader() as reader:
            self._start_ns = int(reader.start_time) if reader.message_count else 0

    def _reader(self):
        from semloc_ros.io.bags import open_bag

        return open_bag(self.bag_path)

    @property
    def start_ns(self) -> int:
        return self._start_ns

    def messages(self, start_ns: int | None = None) -> Iterator[BagMessage]:
        """The selected topics' messages with bag time >= ``start_ns``, in bag time order."""
        with self._reader() as reader:
            connections = [c for c in reader.connections if c.topic in self.topics]
            if not connections:
                return
            for connection, log_time, raw in reader.messages(connections=connections, start=start_ns):
                yield BagMessage(connection.topic, connection.msgtype, int(log_time), bytes(raw))


def schedule(source: MessageSource, rate: float = 1.0, start_offset_s: float = 0.0, loop: bool = False,
             max_loops: int | None = None) -> Iterator[Scheduled]:
    """Due times of the source's messages played at ``rate`` x recorded speed from ``start_offset_s`` on.

    A message logged at bag time ``t`` is due ``(t - (start + offset)) / rate`` seconds after playback
    starts. With ``loop`` the messages from the offset on are played again and again (at most ``max_loops``
    times when given); the next pass starts one mean message interval of the previous pass after its last
    message (1 s of bag time when the pass has a single message), so the last and first messages of two
    passes are not published at the same instant.
    """
    if not rate > 0.0:
        raise PlaybackError(f"rate must be > 0, got {rate}")
    if not 0.0 <= start_offset_s < float("inf"):
        raise PlaybackError(f"start offset must be >= 0 s, got {start_offset_s}")
    if max_loops is not None and max_loops < 1:
        raise PlaybackError(f"max_loops must be >= 1, got {max_loops}")
    return _schedule(source, rate, source.start_ns + round(start_offset_s * NS_PER_S), loop, max_loops)


def _schedule(source: MessageSource, rate: float, origin_ns: int, loop: bool,
              max_loops: int | None) -> Iterator[Scheduled]:
    pass_start_s = 0.0
    index = 0
    while True:
        count, first_ns, last_ns = 0, 0, 0
        for message in source.messages(origin_ns):
            if message.log_time_ns < origin_ns:
                continue  # a source may return earlier messages; they are before the offset
            if count == 0:
                first_ns = message.log_time_ns
            count += 1
            last_ns = message.log_time_ns
            yield Scheduled(pass_start_s + (message.log_time_ns - origin_ns) / NS_PER_S / rate, index, message)
        index += 1
        if count == 0 or not loop or (max_loops is not None and index >= max_loops):
            return
        gap_ns = (last_ns - first_ns) / (count - 1) if count > 1 else NS_PER_S
        pass_start_s += (last_ns - origin_ns + max(gap_ns, 1.0)) / NS_PER_S / rate


def play(items: Iterable[Scheduled], publish: Callable[[Scheduled], None], *, rate: float = 1.0,
         clock_period_s: float | None = None, publish_clock: Callable[[int], None] | None = None,
         should_stop: Callable[[], bool] = lambda: False, now: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep, max_sleep_s: float = 0.1) -> int:
    """Publish each item at its due time (relative to the first call of ``now``); returns how many were published.

    With ``publish_clock``, the bag time is published right before each message and every ``clock_period_s``
    while waiting (interpolated at ``rate``; between two loops it runs on from the last message, then
    rewinds with the first message of the next loop). ``should_stop`` is checked at least every ``max_sleep_s``.
    """
    start = now()
    published = 0
    last_clock = -float("inf")
    previous: Scheduled | None = None
    previous_at = start
    for item in items:
        while True:
            if should_stop():
                return published
            t = now()
            remaining = start + item.due_s - t
            if remaining <= DUE_TOLERANCE_S:
                break
            step = min(remaining, max_sleep_s)
            if publish_clock is not None and clock_period_s:
                next_tick = last_clock + clock_period_s
                if t >= next_tick - DUE_TOLERANCE_S:
                    if previous is not None and previous.loop != item.loop:  # bag time runs on, then rewinds
                        publish_clock(previous.bag_time_ns + round((t - previous_at) * rate * NS_PER_S))
                    else:
                        publish_clock(item.bag_time_ns - round(remaining * rate * NS_PER_S))
                    last_clock, next_tick = t, t + clock_period_s
                step = min(step, next_tick - t)
            sleep(step)
        if publish_clock is not None:
            publish_clock(item.bag_time_ns)
            last_clock = now()
        publish(item)
        published += 1
        previous, previous_at = item, now()
    return published
