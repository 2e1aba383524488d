"""run_node's stop path: SIGINT/SIGTERM end a node between callbacks, with exit code 0 and a shutdown line.

Each case runs a node process whose timer callback signals its own process and then goes on running Python code,
so the signal always lands inside a callback: with rclpy's signal handlers it raised KeyboardInterrupt there,
which a message conversion or a callback's guard could turn into an ordinary error (exit 1 or a node that kept
running).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

NODE_SCRIPT = """
import os, signal, sys, time
from rclpy.node import Node
from semloc_ros.ros import node_common

node_common.SHUTDOWN_TIMEOUT_S = {watchdog_s}


class Interrupted(Node):
    def __init__(self):
        super().__init__("interrupted_node")
        self.timer = self.create_timer(0.05, self.tick)

    def tick(self):
        self.timer.cancel()
        print("callback started", flush=True)
        os.kill(os.getpid(), signal.{signal_name})
        try:  # like a guarded callback or a C++ message conversion: errors become a log line
            for _ in range(20):
                time.sleep(0.01)
        except Exception as error:
            print(f"callback error: {{type(error).__name__}}", flush=True)
            return
        print("callback finished", flush=True)
        {after_callback}


sys.exit(node_common.run_node(Interrupted, []))
"""


def run_node_script(signal_name: str, after_callback: str = "", watchdog_s: float = 5.0,
                    timeout_s: float = 30.0) -> tuple[subprocess.CompletedProcess, float]:
    script = NODE_SCRIPT.format(signal_name=signal_name, after_callback=after_callback, watchdog_s=watchdog_s)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout_s,
                            env=env)
    return result, time.monotonic() - start


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_inside_a_callback_ends_the_node_after_it_cleanly(signal_name):
    result, _ = run_node_script(signal_name)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "callback finished" in output, output  # the signal did not raise inside the callback
    assert f"{signal_name}: shutting down" in output, output
    assert "did not finish" not in output, output  # left spin and tore down well within the watchdog


def test_a_repeated_signal_during_a_hung_teardown_ends_the_node_at_once():
    """After the first signal the usual handlers are back: a second SIGTERM is not left to the watchdog."""
    hang = ("self.destroy_node = lambda: (print('teardown hangs', flush=True), "
            "os.kill(os.getpid(), signal.SIGTERM), time.sleep(60))")
    result, seconds = run_node_script("SIGTERM", after_callback=hang, watchdog_s=60.0)
    output = result.stdout + result.stderr
    assert "teardown hangs" in output, output
    assert result.returncode == -signal.SIGTERM, output
    assert seconds < 20, output
