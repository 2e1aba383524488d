"""Start the three semloc nodes as separate processes from one ROS 2 parameter file (ROS-free).

This is what ``ros2 launch semloc_ros semloc.launch.py`` does on a ROS install, for environments where
the launch system is not available (e.g. the PyPI ROS 2 wheels).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import yaml

NODES = ("segmentation_node", "descriptor_node", "localizer_node")
CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
DEFAULT_PARAMS_FILE = CONFIG_DIR / "semloc.yaml"
FASTDDS_PROFILE_NAME = "fastdds_large_frames.xml"  # lets camera frames over ~0.5 MB through (see the file)


def ros_environment(domain_id: int | None = None) -> dict[str, str]:
    """The current environment with the semloc ROS defaults (:func:`apply_ros_defaults`) and an optional
    domain id: what a node process started by semloc gets."""
    env = apply_ros_defaults(dict(os.environ))
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def apply_ros_defaults(env: MutableMapping[str, str] = os.environ) -> MutableMapping[str, str]:
    """Set in ``env`` (default: this process's, before ``rclpy.init``) what every ROS process semloc starts needs,
    each only when the user has not chosen otherwise: DDS discovery on this machine, and the Fast DDS profile that
    carries large camera frames (config/fastdds_large_frames.xml; Fast DDS reads it when the first participant of
    the process is created). Returns ``env``."""
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if "FASTDDS_DEFAULT_PROFILES_FILE" not in env:  # the user's profile (even an empty value) wins
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(config_file(FASTDDS_PROFILE_NAME))
    return env


def config_file(name: str) -> Path:
    """``config/<name>`` of the source tree, else of the installed share directory."""
    if (CONFIG_DIR / name).is_file():
        return CONFIG_DIR / name
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("semloc_ros")) / "config" / name


def default_params_file() -> Path:
    """config/semloc.yaml of the source tree, else of the installed share directory."""
    return config_file(DEFAULT_PARAMS_FILE.name)


class PipelineRunner:
    """The three nodes as child processes; use as a context manager so they are always stopped.

    ``overrides`` maps node name -> {parameter: value} and is written to a second parameter file that
    takes precedence over ``params_file``; ``remaps`` are ROS remapping rules applied to every node.
    """

    def __init__(self, params_file: Path | None = None,
                 overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 remaps: Mapping[str, str] | None = None, nodes: tuple[str, ...] = NODES,
                 domain_id: int | None = None, log_dir: Path | None = None) -> None:
        self.params_file = Path(params_file) if params_file else default_params_file()
        self.overrides = {node: dict(values) for node, values in (overrides or {}).items()}
        self.remaps = dict(remaps or {})
        self.nodes = nodes
        self.env = ros_environment(domain_id)
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen] = {}
        self._overlay: Path | None = None

    def command(self, node: str) -> list[str]:
        command = [sys.executable, "-m", f"semloc_ros.ros.{node}", "--ros-args", "--params-file",
                   str(self.params_file)]
        if self._overlay is not None:
            command += ["--params-file", str(self._overlay)]
        for source, target in self.remaps.items():
            command += ["-r", f"{source}:={target}"]
        return command

    def start(self) -> PipelineRunner:
        if self.overrides:
            handle, name = tempfile.mkstemp(prefix="semloc-params-", suffix=".yaml")
            with os.fdopen(handle, "w") as stream:
                yaml.safe_dump({node: {"ros__parameters": values} for node, values in self.overrides.items()},
                               stream)
            self._overlay = Path(name)
        for node in self.nodes:
            self._spawn(node, log_mode="w")
        return self

    def _spawn(self, node: str, log_mode: str) -> subprocess.Popen:
        output = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = open(self.log_dir / f"{node}.log", log_mode)  # noqa: SIM115 (closed in stop())
        self.processes[node] = subprocess.Popen(self.command(node), env=self.env, stdout=output,
                                                stderr=subprocess.STDOUT if output else None)
        return self.processes[node]

    def restart(self, node: str, sig: int = signal.SIGKILL, timeout_s: float = 10.0) -> subprocess.Popen:
        """Stop one node with ``sig`` (default SIGKILL: a crash) and start it again with the same command.

        Its log (if any) is appended to. Returns the new process.
        """
        process = self.processes[node]
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        return self._spawn(node, log_mode="a")

    def exited(self) -> dict[str, int]:
        """Nodes that have exited, with their exit codes."""
        return {node: code for node, process in self.processes.items()
                if (code := process.poll()) is not None}

    def exit_report(self) -> str | None:
        """The nodes that exited, each with its exit code and the last line of its log; None while all run."""
        reports = []
        for node, code in self.exited().items():
            log = self.log_dir / f"{node}.log" if self.log_dir is not None else None
            lines = log.read_text(errors="replace").strip().splitlines() if log is not None and log.is_file() else []
            reports.append(f"{node} exited with code {code}" + (f": {lines[-1]}" if lines else ""))
        return "; ".join(reports) or None

    def wait(self) -> int:
        """Block until a node exits (or Ctrl-C); returns the first non-zero exit code, else 0."""
        try:
            while not (done := self.exited()):
                time.sleep(0.2)
            for node, code in done.items():
                print(f"[semloc run] {node} exited with code {code}", file=sys.stderr)
            return next((code for code in done.values() if code), 0)
        except KeyboardInterrupt:
            return 0

    def stop(self, timeout_s: float = 10.0) -> dict[str, int]:
        """SIGINT every node (clean rclpy shutdown), then SIGTERM/SIGKILL stragglers; returns exit codes."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout_s
        codes = {}
        for node, process in self.processes.items():
            try:
                codes[node] = process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    codes[node] = process.wait(3.0)
                except subprocess.TimeoutExpired:
                    process.kill()
                    codes[node] = process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if self._overlay is not None:
            self._overlay.unlink(missing_ok=True)
        return codes

    def __enter__(self) -> PipelineRunner:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
