"""Pieces shared by the semloc nodes: validated parameters, diagnostics publishing and the segmenter id topic.

Parameters are declared once, as :class:`ParameterSpec` tuples (``PARAMETERS`` of each node module); those of a
configuration dataclass of the core come from its field metadata (:func:`config_parameters`), so the declared
defaults, meanings and ranges are the core's. Every float parameter must be a finite number within its range
(:class:`~semloc_ros.core.settings.Bounds`; NaN and infinity only where the bounds allow them).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from semloc_ros.core.settings import Bounds, flat_fields
from semloc_ros.ros.conversions import stamp_to_ns
from semloc_ros.ros.runner import apply_ros_defaults
from semloc_ros.ros.stage_stats import SequenceMonitor, StageStats

Check = Callable[[Any], str | None]
FINITE = Bounds()

# The segmentation node publishes its segmenter's id (with the label mapping) here once, latched: the descriptor
# node puts it in the pipeline id of its descriptors (semloc_ros.core.pipeline_id) without knowing the node.
SEGMENTER_ID_TOPIC = "semloc/segmenter_id"
SEGMENTER_ID_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.TRANSIENT_LOCAL)


@dataclass(frozen=True)
class ParameterSpec:
    """A node parameter: default value (which fixes its type), meaning, check and mutability.

    A float parameter without a check must still be finite (:data:`FINITE`); give it :class:`Bounds` for a range.
    """

    name: str
    default: Any
    description: str
    check: Check | None = None
    read_only: bool = False

    def problem(self, value: Any) -> str | None:
        """None if ``value`` is valid, else ``"<name> <reason>"``."""
        check = self.check if self.check is not None or not isinstance(self.default, float) else FINITE
        reason = None if check is None else check(value)
        return None if reason is None else f"{self.name} {reason}"

    @property
    def valid_text(self) -> str:
        """The valid values in words (parameter table): a range, a list of choices, or empty."""
        check = self.check if self.check is not None or not isinstance(self.default, float) else FINITE
        return getattr(check, "text", "")


def config_parameters(config_class: type) -> tuple[ParameterSpec, ...]:
    """The parameters of a core configuration dataclass (:mod:`semloc_ros.core.settings`): flat names, the
    dataclass defaults, help texts and ranges."""
    return tuple(ParameterSpec(f.name, [float(v) for v in f.default] if isinstance(f.default, tuple) else f.default,
                               f.help, f.bounds) for f in flat_fields(config_class))  # a tuple: a double array


class OneOf:
    """Check of a string parameter with a fixed set of values."""

    def __init__(self, *choices: str) -> None:
        self.choices = choices
        self.text = " | ".join(choices)

    def __call__(self, value: Any) -> str | None:
        return None if value in self.choices else f"must be one of {', '.join(self.choices)}; got '{value}'"



class ValidatedParameters:
    """Declares parameters with descriptors, validates start-up values and run-time updates.

    Invalid start-up values raise ``ValueError`` (the node refuses to start with a reason); invalid
    run-time updates are rejected through ``SetParametersResult.reason`` and the old value stays.
    Accepted updates are applied by ``on_change(name_to_value)``.
    """

    def __init__(self, node: Node, specs: Iterable[ParameterSpec],
                 on_change: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._node = node
        self._specs = {spec.name: spec for spec in specs}
        self._on_change = on_change
        for spec in self._specs.values():
            node.declare_parameter(spec.name, spec.default, ParameterDescriptor(
                description=spec.description, read_only=spec.read_only))
        problems = [reason for spec in self._specs.values()
                    if (reason := spec.problem(self.get(spec.name))) is not None]
        if problems:
            raise ValueError(f"{node.get_name()}: invalid parameters: " + "; ".join(problems))
        node.add_on_set_parameters_callback(self._validate_update)
        node.add_post_set_parameters_callback(self._apply_update)

    def get(self, name: str) -> Any:
        return self._node.get_parameter(name).value

    def _validate_update(self, parameters: list[Parameter]) -> SetParametersResult:
        for parameter in parameters:
            if parameter.name not in self._specs:
                continue
            reason = self._specs[parameter.name].problem(parameter.value)
            if reason is not None:
                self._node.get_logger().warning(f"rejected parameter update: {reason}")
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply_update(self, parameters: list[Parameter]) -> None:
        changed = {p.name: p.value for p in parameters if p.name in self._specs}
        if changed and self._on_change is not None:
            self._on_change(changed)


class StageDiagnostics:
    """Publishes a stage's ``StageStats`` on /diagnostics once per ``period_s``.

    Level: ERROR while ``fatal`` is set (e.g. no database loaded), WARN when an input was rejected or a
    suspect input was processed (``StageStats.record_warning``) in the last ``warn_window_s`` seconds, OK
    otherwise.
    """

    def __init__(self, node: Node, stats: StageStats, period_s: float = 1.0,
                 warn_window_s: float = 5.0) -> None:
        self._node = node
        self.stats = stats
        self.fatal = ""
        self._warn_window_s = warn_window_s
        self._publisher = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._timer = node.create_timer(period_s, self.publish)

    def status(self) -> DiagnosticStatus:
        status = DiagnosticStatus(name=f"semloc: {self._node.get_name()}",
                                  hardware_id=self._node.get_fully_qualified_name())
        if self.fatal:
            status.level, status.message = DiagnosticStatus.ERROR, self.fatal
        elif min(self.stats.seconds_since_error(), self.stats.seconds_since_warning()) < self._warn_window_s:
            newest_is_error = self.stats.seconds_since_error() <= self.stats.seconds_since_warning()
            status.level = DiagnosticStatus.WARN
            status.message = self.stats.last_error if newest_is_error else self.stats.last_warning
        else:
            status.level, status.message = DiagnosticStatus.OK, "running"
        status.values = [KeyValue(key=k, value=v) for k, v in self.stats.as_key_values().items()]
        return status

    def publish(self) -> None:
        message = DiagnosticArray()
        message.header.stamp = self._node.get_clock().now().to_msg()
        message.status = [self.status()]
        self._publisher.publish(message)


def guarded(method: Callable[..., None]) -> Callable[..., None]:
    """Wrap a node callback so that an unexpected exception is counted and logged instead of killing the node.

    An exception escaping a callback would end ``rclpy.spin`` and the process; the wrapped callback records
    it as ``internal_error`` in ``self.stats`` (diagnostics WARN) and logs the traceback (throttled).
    """

    @functools.wraps(method)
    def wrapper(self: Node, *args: Any, **kwargs: Any) -> None:
        try:
            method(self, *args, **kwargs)
        except Exception as error:  # the last line of defence of a long-running node
            self.stats.record_error("internal_error", f"{method.__name__}: {type(error).__name__}: {error}")
            self.get_logger().error(f"{method.__name__} failed, input dropped: {traceback.format_exc()}",
                                    throttle_duration_sec=5.0)

    return wrapper


def run_node(node_class: Callable[[], Node], args: list[str] | None = None) -> int:
    """Spin one node until SIGINT, SIGTERM or shutdown; a start-up failure is logged with its reason (exit 1).

    rclpy's own signal handlers are not installed: they raise ``KeyboardInterrupt`` wherever the node happens to be,
    e.g. inside a callback or a message conversion that turns it into an ordinary error (exit 1, or swallowed by
    a callback's guard so the node keeps running), and they shut the context down from a second thread while this
    one tears it down. A signal here only sets a flag (:class:`StopRequest`); the node leaves its spin loop within
    :data:`STOP_POLL_S`, says so and tears down in this thread. A repeated signal during the teardown acts at once.
    """
    stop = init_with_stop_request(args, ros_defaults=False)
    node = None
    code = 0
    try:
        node = node_class()
        spin_until_stopped(node, stop)
    except Exception as error:  # a node that cannot start says why and exits non-zero
        rclpy.logging.get_logger(getattr(node_class, "__name__", "semloc")).fatal(
            f"cannot start: {type(error).__name__}: {error}")
        code = 1
    finally:
        stop.restore()  # from here a repeated SIGINT/SIGTERM acts at once (default action), even mid-teardown
        # Tearing down the DDS participant can, rarely, hang; a node asked to stop must still stop.
        watchdog = threading.Timer(SHUTDOWN_TIMEOUT_S, _exit_after_hung_shutdown, args=(code,))
        watchdog.daemon = True
        watchdog.start()
        try:
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
        finally:  # a teardown that raised must not leave the timer to end the process later
            watchdog.cancel()
    return code


SHUTDOWN_TIMEOUT_S = 5.0
STOP_POLL_S = 0.1  # longest wait for work before the stop flag is looked at again


def spin_until_stopped(node: Node, stop: StopRequest) -> None:
    """Execute the node's callbacks until ``stop`` is set or its context is shut down; log which."""
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        while not stop and node.context.ok():
            executor.spin_once(timeout_sec=STOP_POLL_S)
    except ExternalShutdownException:  # the context was shut down while waiting
        pass
    finally:
        executor.remove_node(node)
        executor.shutdown()
    reason = stop.signal_name or "context shut down"
    node.get_logger().info(f"{reason}: shutting down")


def _exit_after_hung_shutdown(code: int) -> None:
    print(f"semloc: node shutdown did not finish within {SHUTDOWN_TIMEOUT_S:g} s (DDS teardown); exiting",
          file=sys.stderr, flush=True)
    os._exit(code)


class StopRequest:
    """Becomes true on SIGINT/SIGTERM, so a command or node can leave its loop and clean up (e.g. finalise a bag).

    The handler only sets the flag: no exception is raised inside whatever code the signal interrupts.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        self._previous = {signum: signal.signal(signum, self._request) for signum in self.SIGNALS}

    def _request(self, signum: int, frame: object) -> None:
        self.requested = True
        self.signal_name = self.signal_name or signal.Signals(signum).name

    def restore(self) -> None:
        """Put back the handlers that were there before (a repeated signal then has its usual effect)."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)

    def __bool__(self) -> bool:
        return self.requested


def init_with_stop_request(args: list[str] | None = None, ros_defaults: bool = True) -> StopRequest:
    """``rclpy.init`` without rclpy's signal handlers; SIGINT and SIGTERM set the returned flag instead.

    ``ros_defaults``: first apply semloc's ROS environment defaults (:func:`apply_ros_defaults`) to this process.
    """
    from rclpy.signals import SignalHandlerOptions

    if ros_defaults:
        apply_ros_defaults()  # unless the user chose otherwise: discovery on this machine, the large-frame profile
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    return StopRequest()


def warn_on_stamp_order(node: Node, monitor: SequenceMonitor, stats: StageStats, stamp: Time, outcome: str) -> None:
    """Count and log an out-of-order, repeated or implausible stamp; the message is still processed (``outcome``
    says how). An implausible jump is counted once (``warnings.stamp_jump``) and the reference re-anchors, so
    the diagnostics recover by themselves."""
    stamp_ns = stamp_to_ns(stamp)
    previous = monitor.newest_stamp_ns
    order = monitor.stamp_order(stamp_ns)
    if order == "jump":
        text = (f"stamp {stamp_ns} ns is {abs(stamp_ns - previous) / 1e9:.0f} s away from the newest "
                f"{previous} ns: implausible, stamps are now compared with it; {outcome}")
        stats.record_warning("stamp_jump", text)
        node.get_logger().warning(f"stamp jump: {text}", throttle_duration_sec=2.0)
    elif order is not None:
        text = f"stamp {stamp_ns} ns is not newer than {monitor.newest_stamp_ns} ns; {outcome}"
        stats.record_warning(f"{order}_stamp", text)
        node.get_logger().warning(f"{order} stamp: {text}", throttle_duration_sec=2.0)
