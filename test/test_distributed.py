"""Fleet maps on Ray: a loopback cluster (head + 2 worker processes) builds the map a serial build makes, also when
a worker is killed mid-build, and no socket of the run leaves loopback. One cluster serves the module."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest

from semloc_ros.distributed import LOOPBACK_ENVIRONMENT

os.environ.update(LOOPBACK_ENVIRONMENT)  # before ray is imported anywhere in this process
# The module's cluster and its clients share a token of their own (not the user's ~/.ray/auth_token).
os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=uuid.uuid4().hex)

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from semloc_ros.commands import build_db

ray = pytest.importorskip("ray")
TYPESTORE = get_typestore(Stores.ROS2_KILTED)
T = TYPESTORE.types
S = 1_000_000_000
FRAMES_PER_BAG = 8
COMMON = ["--method", "label-histogram", "--untrained-ok", "--threads", "1", "--device", "cpu", "--quiet",
          "--batch-size", "4"]
RAY_OPTIONS = ["--chunk-frames", "4"]  # two tasks per bag
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def _header(t: float, frame_id: str):
    ns = round(t * S)
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // S, nanosec=ns % S),
                                    frame_id=frame_id)


def write_drive_bag(path: Path, lon: float, seed: int) -> None:
    """A bag of FRAMES_PER_BAG random 24x32 images at 2 Hz with a fix every 0.5 s, driving north at 10 m/s."""
    rng = np.random.default_rng(seed)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        image = writer.add_connection("/cam/image_raw", "sensor_msgs/msg/Image", typestore=TYPESTORE)
        fix = writer.add_connection("/gps/fix", "sensor_msgs/msg/NavSatFix", typestore=TYPESTORE)
        for i in range(FRAMES_PER_BAG + 1):
            t = 1.0 + 0.5 * i
            msg = T["sensor_msgs/msg/NavSatFix"](
                header=_header(t, "gps"), status=T["sensor_msgs/msg/NavSatStatus"](status=0, service=1),
                latitude=48.0 + 5.0 * t / 111_200.0, longitude=lon, altitude=500.0,
                position_covariance=np.eye(3).reshape(9), position_covariance_type=2)
            writer.write(fix, round(t * S), TYPESTORE.serialize_cdr(msg, msg.__msgtype__))
            if i < FRAMES_PER_BAG:
                rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
                msg = T["sensor_msgs/msg/Image"](header=_header(t + 0.25, "camera"), height=24, width=32,
                                                 encoding="rgb8", is_bigendian=0, step=96, data=rgb.reshape(-1))
                writer.write(image, round((t + 0.25) * S), TYPESTORE.serialize_cdr(msg, msg.__msgtype__))


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("bags")
    paths = [folder / f"drive{i}" for i in range(4)]
    for i, path in enumerate(paths):
        write_drive_bag(path, 11.0 + 0.001 * i, seed=i)
    return paths


@pytest.fixture(scope="module")
def serial_map(bags, tmp_path_factory) -> Path:
    """The serial build, from a manifest listing the bags relative to it."""
    folder = bags[0].parent
    (folder / "fleet.txt").write_text("# four drives\n" + "\n".join(p.name for p in bags) + "\n\n")
    out = tmp_path_factory.mktemp("serial") / "map.semdb"
    assert build_db.main(["--manifest", str(folder / "fleet.txt"), "--out", str(out), *COMMON]) == 0
    return out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """``ray start --head --block`` on 127.0.0.1 with 2 CPUs (2 worker processes); yields (address, head process)."""
    port = _free_port()
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--node-ip-address",
         "127.0.0.1", "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false",
         "--disable-usage-stats"],
        env={**os.environ, **LOOPBACK_ENVIRONMENT}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert head.poll() is None, "ray start exited"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline, "the Ray head did not start"
            time.sleep(0.3)
        yield address, psutil.Process(head.pid)
    finally:
        family = [head.pid]
        with contextlib.suppress(psutil.Error):
            family += [p.pid for p in psutil.Process(head.pid).children(recursive=True)]
        head.terminate()
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
        for pid in family[1:]:  # what the head left behind (only processes of this cluster, by id)
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


def saved_map(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """A database file's header without its save time, and its arrays."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    header = json.loads(arrays.pop("header").tobytes())
    header.pop("created_utc")
    return header, arrays


def assert_same_map(path: Path, reference: Path) -> None:
    header, arrays = saved_map(path)
    expected_header, expected = saved_map(reference)
    assert header == expected_header
    assert sorted(arrays) == sorted(expected)
    for name, array in expected.items():
        assert arrays[name].dtype == array.dtype and arrays[name].tobytes() == array.tobytes(), name


def non_loopback_sockets(processes: list[psutil.Process]) -> list[str]:
    """Sockets of the processes that listen on or connect to anything but loopback."""
    bad = []
    for process in processes:
        try:
            connections = process.net_connections(kind="inet")
        except psutil.Error:
            continue  # exited meanwhile
        for connection in connections:
            local = connection.laddr.ip if connection.laddr else "127.0.0.1"
            remote = connection.raddr.ip if connection.raddr else "127.0.0.1"
            if local not in LOOPBACK or remote not in LOOPBACK:
                bad.append(f"{process.pid} {connection.laddr} -> {connection.raddr} {connection.status}")
    return bad


def family(process: psutil.Process) -> list[psutil.Process]:
    return [process, *process.children(recursive=True)]


def command_line(process: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return " ".join(process.cmdline())
    return ""  # exited meanwhile


def test_ray_build_of_four_bags_equals_the_serial_build_and_stays_on_loopback(bags, serial_map, cluster, tmp_path,
                                                                               capsys, monkeypatch):
    address, head = cluster
    checks = []

    def checked_build(*args, **kwargs):  # the command's build, checking every socket of the run as chunks finish
        kwargs["on_progress"] = lambda done, total: checks.append(
            non_loopback_sockets([*family(head), psutil.Process()]))
        return real_build(*args, **kwargs)

    real_build = build_db.build_on_ray
    monkeypatch.setattr(build_db, "build_on_ray", checked_build)
    out = tmp_path / "map.semdb"
    assert build_db.main([*map(str, bags), "--out", str(out), *COMMON, *RAY_OPTIONS, "--ray", address]) == 0
    assert "ray: 32 frames in 8 tasks on" in capsys.readouterr().out
    assert_same_map(out, serial_map)
    assert len(checks) == 8 and checks == [[]] * 8
    workers = [p for p in family(head) if command_line(p).startswith("ray::")]
    assert len(workers) >= 2  # the worker processes were among the processes checked


def test_a_worker_killed_mid_build_gives_the_same_map(bags, serial_map, cluster, tmp_path):
    address, head = cluster
    out = tmp_path / "map.semdb"
    result = {}
    build = threading.Thread(target=lambda: result.setdefault("rc", build_db.main(
        [*map(str, bags), "--out", str(out), *COMMON, *RAY_OPTIONS, "--ray", address])))
    build.start()
    killed = None
    while build.is_alive() and killed is None:
        for process in family(head):
            if command_line(process).startswith("ray::describe_chunk"):
                with contextlib.suppress(psutil.Error):
                    process.kill()
                    killed = process.pid
                break
        time.sleep(0.01)
    build.join(timeout=300)
    assert killed is not None, "no task was seen running"
    assert result["rc"] == 0
    assert_same_map(out, serial_map)


def test_ray_auto_starts_a_loopback_cluster_for_the_run(bags, serial_map, tmp_path, capsys, monkeypatch):
    checks = []

    def checked_build(*args, **kwargs):
        kwargs["on_progress"] = lambda done, total: checks.append(non_loopback_sockets(family(psutil.Process())))
        return real_build(*args, **kwargs)

    real_build = build_db.build_on_ray
    monkeypatch.setattr(build_db, "build_on_ray", checked_build)
    out = tmp_path / "map.semdb"
    assert build_db.main([*map(str, bags), "--out", str(out), *COMMON, *RAY_OPTIONS, "--ray", "auto",
                          "--workers", "2"]) == 0
    assert "torch threads [1]" in capsys.readouterr().out
    assert_same_map(out, serial_map)
    assert checks and all(check == [] for check in checks)
    assert not ray.is_initialized()


def test_without_ray_the_option_fails_in_one_line(bags, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    out = tmp_path / "map.semdb"
    assert build_db.main([str(bags[0]), "--out", str(out), *COMMON, "--ray", "auto"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--ray needs the ray package" in error
    assert not out.exists()
    assert build_db.main([str(bags[0]), "--out", str(out), *COMMON, "--ray", "auto", "--chunk-frames", "6"]) == 2
    assert "--chunk-frames" in capsys.readouterr().err
