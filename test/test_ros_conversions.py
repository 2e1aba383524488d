"""Tests of semloc_ros.ros.conversions with real sensor_msgs messages (no rclpy context needed)."""

import struct

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from semloc_ros.core.image_codec import ENCODINGS, ImageEncodingError
from semloc_ros.ros.conversions import (
    array_to_compressed_imgmsg,
    array_to_imgmsg,
    compressed_imgmsg_to_array,
    imgmsg_to_array,
    ns_to_stamp,
    stamp_to_ns,
)


def random_image(encoding: str, height: int = 4, width: int = 6) -> np.ndarray:
    dtype, channels = ENCODINGS[encoding]
    shape = (height, width) if channels == 1 else (height, width, channels)
    rng = np.random.default_rng(7)
    if dtype.kind == "f":
        return rng.normal(size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


def make_header() -> Header:
    return Header(stamp=Time(sec=12, nanosec=345), frame_id="camera_optical")


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_image_message_round_trip(encoding):
    array = random_image(encoding)
    msg = array_to_imgmsg(array, encoding, make_header())
    assert isinstance(msg, Image)
    dtype, channels = ENCODINGS[encoding]
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (4, 6, encoding, 0)
    assert msg.step == 6 * channels * dtype.itemsize
    assert len(msg.data) == msg.step * msg.height
    assert msg.header.frame_id == "camera_optical" and msg.header.stamp.nanosec == 345
    np.testing.assert_array_equal(imgmsg_to_array(msg), array)


def test_array_to_imgmsg_without_header_has_default_header():
    msg = array_to_imgmsg(np.zeros((2, 2), np.uint8), "mono8")
    assert msg.header.frame_id == "" and stamp_to_ns(msg.header.stamp) == 0


def test_hand_built_big_endian_padded_message_decodes():
    msg = Image(height=2, width=2, encoding="16UC1", is_bigendian=1, step=6)
    msg.data = struct.pack(">2H", 1, 513) + b"\0\0" + struct.pack(">2H", 65535, 4096) + b"\0\0"
    np.testing.assert_array_equal(imgmsg_to_array(msg), [[1, 513], [65535, 4096]])


def test_imgmsg_to_array_without_copy_is_a_view_of_the_message_where_the_layout_allows():
    """``copy=False`` (the segmentation node): a packed little-endian frame is read in place, no copy of its
    bytes; padded rows or another byte order still give a (packed, native) copy."""
    packed = array_to_imgmsg(random_image("rgb8"), "rgb8")
    view = imgmsg_to_array(packed, copy=False)
    assert np.shares_memory(view, np.frombuffer(packed.data, np.uint8))
    assert not np.shares_memory(imgmsg_to_array(packed), np.frombuffer(packed.data, np.uint8))
    np.testing.assert_array_equal(view, imgmsg_to_array(packed))
    padded = Image(height=2, width=2, encoding="16UC1", is_bigendian=1, step=6)
    padded.data = struct.pack(">2H", 1, 513) + b"\0\0" + struct.pack(">2H", 65535, 4096) + b"\0\0"
    np.testing.assert_array_equal(imgmsg_to_array(padded, copy=False), [[1, 513], [65535, 4096]])


def test_inconsistent_message_raises_image_encoding_error():
    msg = Image(height=3, width=3, encoding="rgb8", step=9)
    msg.data = bytes(10)
    with pytest.raises(ImageEncodingError, match="expected at least"):
        imgmsg_to_array(msg)
    with pytest.raises(ImageEncodingError, match="exceeds the limit"):
        imgmsg_to_array(Image(height=3, width=3, encoding="mono8", step=3, data=bytes(9)), max_pixels=8)


def test_compressed_png_message_round_trip():
    rgb = random_image("rgb8")
    msg = array_to_compressed_imgmsg(rgb, "rgb8", "png", make_header())
    assert isinstance(msg, CompressedImage)
    assert msg.format == "rgb8; png compressed bgr8"
    assert msg.header.frame_id == "camera_optical"
    decoded, encoding = compressed_imgmsg_to_array(msg)
    assert encoding == "bgr8"
    np.testing.assert_array_equal(decoded, rgb[:, :, ::-1])


def test_compressed_jpeg_message_round_trip_is_close():
    rows, cols = np.mgrid[0:24, 0:32]
    grey = (rows * 4 + cols * 3).astype(np.uint8)
    msg = array_to_compressed_imgmsg(grey, "mono8", "jpeg")
    assert msg.format == "mono8; jpeg compressed mono8"
    decoded, encoding = compressed_imgmsg_to_array(msg)
    assert encoding == "mono8"
    assert np.abs(decoded.astype(int) - grey).mean() < 2.0


def test_corrupt_compressed_message_raises():
    msg = CompressedImage(format="jpeg")
    msg.data = b"\xff\xd8 not really a jpeg"
    with pytest.raises(ImageEncodingError):
        compressed_imgmsg_to_array(msg)


@pytest.mark.parametrize("nanoseconds", [0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_123_456_789, -1])
def test_stamp_round_trip(nanoseconds):
    stamp = ns_to_stamp(nanoseconds)
    assert 0 <= stamp.nanosec < 1_000_000_000
    assert stamp_to_ns(stamp) == nanoseconds


def test_stamp_fields():
    stamp = ns_to_stamp(1_700_000_000_123_456_789)
    assert (stamp.sec, stamp.nanosec) == (1_700_000_000, 123_456_789)
    negative = ns_to_stamp(-1)
    assert (negative.sec, negative.nanosec) == (-1, 999_999_999)
    assert stamp_to_ns(Time(sec=3, nanosec=5)) == 3_000_000_005
    assert stamp_to_ns(ns_to_stamp(np.int64(42))) == 42


def test_ns_to_stamp_rejects_out_of_range_and_non_integers():
    with pytest.raises(ValueError, match="int32"):
        ns_to_stamp(2**31 * 1_000_000_000)
    with pytest.raises(TypeError):
        ns_to_stamp(1.5)
