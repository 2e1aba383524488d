"""``sensor_msgs`` Image/CompressedImage <-> numpy and stamp conversions, mirroring cv_bridge's API.

Thin wrappers over :mod:`semloc_ros.core.image_codec`; the message packages import without an rclpy context.
"""

from __future__ import annotations

import array as pyarray
import importlib
import operator

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from semloc_ros.core.image_codec import (
    MAX_IMAGE_PIXELS,
    CompressedFormat,
    ImageEncodingError,
    array_to_image_fields,
    compressed_format_string,
    decode_compressed,
    encode_compressed,
    image_message_to_array,
)

_NS_PER_S = 1_000_000_000
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def _as_byte_array(data: bytes) -> pyarray.array:
    # An array.array('B') is stored by the generated message setter without a per-element check.
    return pyarray.array("B", data)


def imgmsg_to_array(msg: Image, max_pixels: int = MAX_IMAGE_PIXELS, copy: bool = True) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` into an HxW or HxWxC array (cv_bridge ``imgmsg_to_cv2``), owned unless
    ``copy=False``: then a view of ``msg.data`` where the layout allows
    (:func:`~semloc_ros.core.image_codec.image_fields_to_array`)."""
    return image_message_to_array(msg, max_pixels, copy)


def imgmsg_to_labels(msg: Image, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode a label image (``mono8`` or ``8UC1`` class ids) into an HxW ``uint8`` array."""
    if msg.encoding not in ("mono8", "8UC1"):
        raise ImageEncodingError(f"label images must be mono8 or 8UC1, got '{msg.encoding}'")
    return imgmsg_to_array(msg, max_pixels)


def array_to_imgmsg(array: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """Encode ``array`` as a little-endian ``sensor_msgs/Image`` (cv_bridge ``cv2_to_imgmsg``)."""
    fields = array_to_image_fields(array, encoding)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height = fields.height
    msg.width = fields.width
    msg.encoding = fields.encoding
    msg.is_bigendian = int(fields.is_bigendian)
    msg.step = fields.step
    msg.data = _as_byte_array(fields.data)
    return msg


def compressed_imgmsg_to_array(msg: CompressedImage, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[np.ndarray, str]:
    """Decode a ``sensor_msgs/CompressedImage`` into (array, encoding), e.g. (HxWx3, ``"bgr8"``)."""
    return decode_compressed(msg.format, bytes(msg.data), max_pixels=max_pixels)


def array_to_compressed_imgmsg(
    array: np.ndarray,
    encoding: str,
    fmt: CompressedFormat = "jpeg",
    header: Header | None = None,
) -> CompressedImage:
    """Compress ``array`` of ``encoding`` into a ``sensor_msgs/CompressedImage``.

    ``format`` is written as image_transport does (``"rgb8; jpeg compressed bgr8"``) so that image_transport
    republishers restore the original encoding.
    """
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = compressed_format_string(encoding, fmt)
    msg.data = _as_byte_array(encode_compressed(array, encoding, fmt))
    return msg


def stamp_to_ns(stamp: Time) -> int:
    """A ``builtin_interfaces/Time`` as integer nanoseconds."""
    return int(stamp.sec) * _NS_PER_S + int(stamp.nanosec)


def ns_to_stamp(nanoseconds: int) -> Time:
    """Integer nanoseconds as a ``builtin_interfaces/Time`` (``nanosec`` in [0, 1e9), ``sec`` an int32)."""
    nanoseconds = operator.index(nanoseconds)
    seconds, remainder = divmod(nanoseconds, _NS_PER_S)
    if not _INT32_MIN <= seconds <= _INT32_MAX:
        raise ValueError(f"{nanoseconds} ns is outside the int32 seconds range of builtin_interfaces/Time")
    return Time(sec=seconds, nanosec=remainder)


def message_class(msgtype: str) -> type | None:
    """The installed Python class of ``pkg/msg/Name`` (also ``pkg/Name``), or None when it is not installed."""
    try:
        from rosidl_runtime_py.utilities import get_message
    except ImportError:
        get_message = None
    if get_message is not None:
        try:
            return get_message(msgtype)
        except (AttributeError, ModuleNotFoundError, ValueError):
            return None
    parts = msgtype.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or parts[1] != "msg" or not all(parts):
        return None
    try:
        return getattr(importlib.import_module(f"{parts[0]}.msg"), parts[2], None)
    except ImportError:
        return None
