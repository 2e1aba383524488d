"""Tests of semloc_ros.core.image_codec (raw and compressed image conversion with cv_bridge semantics)."""

import struct

import numpy as np
import pytest

from semloc_ros.core.image_codec import (
    ENCODINGS,
    ImageEncodingError,
    ImageFields,
    array_to_image_fields,
    compressed_format_string,
    decode_compressed,
    encode_compressed,
    image_fields_to_array,
    to_rgb8,
)

REQUIRED_ENCODINGS = (
    "rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "8UC1", "8UC3", "8UC4", "16UC1", "16SC1", "32FC1",
    "64FC1",
)  # fmt: skip


def random_image(encoding: str, height: int = 5, width: int = 7, seed: int = 0) -> np.ndarray:
    """A random array of the dtype and channels of ``encoding`` (full value range for integers)."""
    dtype, channels = ENCODINGS[encoding]
    shape = (height, width) if channels == 1 else (height, width, channels)
    rng = np.random.default_rng(seed)
    if dtype.kind == "f":
        return rng.normal(size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


def smooth_bgr(height: int = 32, width: int = 48) -> np.ndarray:
    """A smooth colour gradient (compresses well with JPEG)."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack(
        [rows * 255 // (height - 1), cols * 255 // (width - 1), (rows + cols) * 255 // (height + width - 2)],
        axis=2,
    ).astype(np.uint8)


def decode(fields: ImageFields, **overrides) -> np.ndarray:
    values = {
        "height": fields.height,
        "width": fields.width,
        "encoding": fields.encoding,
        "is_bigendian": fields.is_bigendian,
        "step": fields.step,
        "data": fields.data,
    }
    values.update(overrides)
    return image_fields_to_array(**values)


def test_all_required_encodings_are_supported():
    assert set(REQUIRED_ENCODINGS) <= set(ENCODINGS)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_round_trip_every_encoding(encoding):
    array = random_image(encoding)
    dtype, channels = ENCODINGS[encoding]
    fields = array_to_image_fields(array, encoding)
    assert (fields.height, fields.width, fields.encoding) == (5, 7, encoding)
    assert fields.is_bigendian is False
    assert fields.step == 7 * channels * dtype.itemsize
    assert len(fields.data) == fields.step * fields.height
    decoded = fields.to_array()
    assert decoded.dtype == dtype
    assert decoded.shape == array.shape
    assert decoded.flags.c_contiguous and decoded.flags.writeable
    np.testing.assert_array_equal(decoded, array)


def test_decoded_array_owns_its_memory():
    buffer = bytearray(range(12))
    decoded = image_fields_to_array(height=3, width=4, encoding="mono8", is_bigendian=False, step=4, data=buffer)
    buffer[0] = 99
    assert decoded[0, 0] == 0
    decoded[1, 1] = 200
    assert buffer[5] == 5


def test_output_is_little_endian_even_for_big_endian_input_arrays():
    array = np.array([[1, 258]], dtype=">u2")
    fields = array_to_image_fields(array, "mono16")
    assert fields.data == struct.pack("<2H", 1, 258)
    np.testing.assert_array_equal(fields.to_array(), [[1, 258]])


def test_one_channel_encodings_accept_hxwx1_arrays():
    array = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    assert array_to_image_fields(array, "mono8").to_array().shape == (2, 3)


def test_non_contiguous_arrays_are_encoded_in_row_order():
    array = np.arange(24, dtype=np.uint8).reshape(4, 6)[:, ::2]
    np.testing.assert_array_equal(array_to_image_fields(array, "8UC1").to_array(), array)


@pytest.mark.parametrize(("encoding", "step"), [("mono8", 9), ("rgb8", 20), ("mono16", 11), ("32FC1", 21)])
def test_padded_rows_decode_correctly(encoding, step):
    array = random_image(encoding, height=3, width=4, seed=1)
    packed = array_to_image_fields(array, encoding)
    row_bytes = packed.step
    padded = b"".join(
        packed.data[row * row_bytes : (row + 1) * row_bytes] + b"\xab" * (step - row_bytes) for row in range(3)
    )
    decoded = image_fields_to_array(height=3, width=4, encoding=encoding, is_bigendian=False, step=step, data=padded)
    np.testing.assert_array_equal(decoded, array)
    assert decoded.flags.c_contiguous


def test_trailing_bytes_after_the_last_row_are_ignored():
    decoded = image_fields_to_array(
        height=2, width=2, encoding="mono8", is_bigendian=False, step=2, data=bytes([1, 2, 3, 4, 5, 6])
    )
    np.testing.assert_array_equal(decoded, [[1, 2], [3, 4]])


def test_big_endian_mono16_decodes_to_the_right_values():
    values = [1, 256, 4660, 65535]
    data = struct.pack(">4H", *values)
    decoded = image_fields_to_array(height=2, width=2, encoding="mono16", is_bigendian=1, step=4, data=data)
    np.testing.assert_array_equal(decoded, np.array(values).reshape(2, 2))
    assert decoded.dtype == np.dtype(np.uint16)  # native order
    swapped = image_fields_to_array(height=2, width=2, encoding="mono16", is_bigendian=0, step=4, data=data)
    np.testing.assert_array_equal(swapped, np.array([256, 1, 13330, 65535]).reshape(2, 2))


def test_big_endian_32fc1_with_padding_decodes_to_the_right_values():
    values = [1.5, -2.25, 1e-3, 12345.0, np.inf, 0.0]
    rows = [struct.pack(">3f", *values[:3]) + b"\0\0", struct.pack(">3f", *values[3:]) + b"\0\0"]
    decoded = image_fields_to_array(
        height=2, width=3, encoding="32FC1", is_bigendian=True, step=14, data=b"".join(rows)
    )
    np.testing.assert_array_equal(decoded, np.array(values, dtype=np.float32).reshape(2, 3))
    assert decoded.dtype == np.dtype(np.float32)


def test_data_given_as_list_or_array_module_is_accepted():
    import array as pyarray

    expected = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    for data in ([1, 2, 3, 4], pyarray.array("B", [1, 2, 3, 4]), memoryview(bytes([1, 2, 3, 4]))):
        decoded = image_fields_to_array(height=2, width=2, encoding="8UC1", is_bigendian=0, step=2, data=data)
        np.testing.assert_array_equal(decoded, expected)


GOOD_FIELDS = ImageFields(height=2, width=3, encoding="rgb8", is_bigendian=False, step=9, data=bytes(18))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"encoding": "yuv422"}, "unsupported image encoding"),
        ({"encoding": ""}, "unsupported image encoding"),
        ({"width": 0}, "no pixels"),
        ({"height": 0}, "no pixels"),
        ({"height": -1}, "no pixels"),
        ({"step": 8}, "step 8 is smaller"),
        ({"data": bytes(17)}, "expected at least"),
        ({"step": 10}, "expected at least"),
        ({"max_pixels": 5}, "exceeds the limit"),
    ],
)
def test_decoding_errors(overrides, message):
    with pytest.raises(ImageEncodingError, match=message):
        decode(GOOD_FIELDS, **overrides)


def test_default_pixel_limit_rejects_absurd_headers_before_reading_data():
    with pytest.raises(ImageEncodingError, match="exceeds the limit"):
        image_fields_to_array(height=10_000, width=10_000, encoding="mono8", is_bigendian=0, step=10_000, data=b"")


def test_image_encoding_error_is_a_value_error():
    assert issubclass(ImageEncodingError, ValueError)


@pytest.mark.parametrize(
    ("array", "encoding", "message"),
    [
        (np.zeros((2, 3, 3), np.uint16), "rgb8", "needs dtype uint8"),
        (np.zeros((2, 3), np.uint8), "rgb8", "needs 3 channel"),
        (np.zeros((2, 3, 4), np.uint8), "bgr8", "needs 3 channel"),
        (np.zeros((2, 3, 2), np.uint8), "mono8", "needs 1 channel"),
        (np.zeros((2, 3), np.float64), "32FC1", "needs dtype float32"),
        (np.zeros((2, 3), np.int16), "16UC1", "needs dtype uint16"),
        (np.zeros((1, 2, 3, 3), np.uint8), "rgb8", "HxW or HxWxC"),
        (np.zeros((0, 3, 3), np.uint8), "rgb8", "no pixels"),
        (np.zeros((2, 3), np.uint8), "nv12", "unsupported image encoding"),
    ],
)
def test_encoding_errors(array, encoding, message):
    with pytest.raises(ImageEncodingError, match=message):
        array_to_image_fields(array, encoding)


def test_to_rgb8_colour_orders():
    bgr = random_image("bgr8", seed=2)
    expected = bgr[:, :, ::-1]
    np.testing.assert_array_equal(to_rgb8(bgr, "bgr8"), expected)
    np.testing.assert_array_equal(to_rgb8(bgr, "8UC3"), expected)
    np.testing.assert_array_equal(to_rgb8(expected, "rgb8"), expected)
    alpha = np.full((*bgr.shape[:2], 1), 7, np.uint8)
    np.testing.assert_array_equal(to_rgb8(np.concatenate([expected, alpha], axis=2), "rgba8"), expected)
    np.testing.assert_array_equal(to_rgb8(np.concatenate([bgr, alpha], axis=2), "bgra8"), expected)
    np.testing.assert_array_equal(to_rgb8(np.concatenate([bgr, alpha], axis=2), "8UC4"), expected)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "mono8", "mono16", "32FC1", "64FC1", "16SC1"])
def test_to_rgb8_returns_contiguous_hxwx3_uint8(encoding):
    rgb = to_rgb8(random_image(encoding, seed=3), encoding)
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous


def test_to_rgb8_mono8_is_replicated():
    grey = np.array([[0, 10], [200, 255]], np.uint8)
    for encoding in ("mono8", "8UC1"):
        rgb = to_rgb8(grey, encoding)
        for channel in range(3):
            np.testing.assert_array_equal(rgb[:, :, channel], grey)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
def test_to_rgb8_sixteen_bit_is_min_max_normalised(encoding):
    depth = np.array([[1000, 1101], [1200, 1051]], np.uint16)
    rgb = to_rgb8(depth, encoding)
    np.testing.assert_array_equal(rgb[:, :, 0], [[0, 129], [255, 65]])
    np.testing.assert_array_equal(rgb[:, :, 2], rgb[:, :, 0])


def test_to_rgb8_constant_sixteen_bit_image_is_black():
    assert not to_rgb8(np.full((2, 2), 500, np.uint16), "mono16").any()


def test_to_rgb8_unit_floats_are_clipped_and_scaled():
    values = np.array([[0.0, 0.5], [1.0, -0.3], [np.nan, 0.2]], np.float32)
    rgb = to_rgb8(values, "32FC1")
    np.testing.assert_array_equal(rgb[:, :, 1], [[0, 128], [255, 0], [0, 51]])


def test_to_rgb8_large_floats_are_min_max_normalised_ignoring_non_finite():
    values = np.array([[2.0, 4.0], [np.inf, 6.0]], np.float64)
    np.testing.assert_array_equal(to_rgb8(values, "64FC1")[:, :, 0], [[0, 128], [0, 255]])


def test_to_rgb8_sixteen_bit_colour_is_scaled():
    rgb16 = np.array([[[65535, 0, 32896]]], np.uint16)
    np.testing.assert_array_equal(to_rgb8(rgb16, "rgb16"), [[[255, 0, 128]]])
    np.testing.assert_array_equal(to_rgb8(rgb16, "bgr16"), [[[128, 0, 255]]])


def test_to_rgb8_rejects_mismatched_arrays_and_unknown_encodings():
    with pytest.raises(ImageEncodingError, match="needs dtype"):
        to_rgb8(np.zeros((2, 2), np.float32), "mono8")
    with pytest.raises(ImageEncodingError, match="unsupported"):
        to_rgb8(np.zeros((2, 2), np.uint8), "bayer_rggb8")


@pytest.mark.parametrize(
    ("encoding", "decoded_encoding"),
    [
        ("bgr8", "bgr8"),
        ("8UC3", "bgr8"),
        ("mono8", "mono8"),
        ("8UC1", "mono8"),
        ("bgra8", "bgra8"),
        ("mono16", "mono16"),
        ("16UC1", "mono16"),
        ("bgr16", "bgr16"),
    ],
)
def test_png_round_trip_is_lossless(encoding, decoded_encoding):
    array = random_image(encoding, seed=4)
    decoded, reported = decode_compressed("png", encode_compressed(array, encoding, "png"))
    assert reported == decoded_encoding
    np.testing.assert_array_equal(decoded, array)


def test_png_of_rgb_encodings_is_decoded_as_bgr():
    rgb = random_image("rgb8", seed=5)
    decoded, encoding = decode_compressed("rgb8; png compressed bgr8", encode_compressed(rgb, "rgb8", "png"))
    assert encoding == "bgr8"
    np.testing.assert_array_equal(decoded, rgb[:, :, ::-1])
    rgba = random_image("rgba8", seed=6)
    decoded, encoding = decode_compressed("png", encode_compressed(rgba, "rgba8", "png"))
    assert encoding == "bgra8"
    np.testing.assert_array_equal(decoded, rgba[:, :, [2, 1, 0, 3]])


def test_jpeg_round_trip_is_close():
    bgr = smooth_bgr()
    decoded, encoding = decode_compressed("jpeg", encode_compressed(bgr, "bgr8", "jpeg"))
    assert encoding == "bgr8" and decoded.shape == bgr.shape
    assert np.abs(decoded.astype(int) - bgr).mean() < 3.0
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    decoded_from_rgb, _ = decode_compressed("jpeg", encode_compressed(rgb, "rgb8", "jpeg"))
    assert np.abs(decoded_from_rgb.astype(int) - bgr).mean() < 3.0


def test_jpeg_drops_alpha_and_keeps_grey():
    bgr = smooth_bgr()
    bgra = np.concatenate([bgr, np.full((*bgr.shape[:2], 1), 255, np.uint8)], axis=2)
    decoded, encoding = decode_compressed("jpeg", encode_compressed(bgra, "bgra8", "jpeg"))
    assert encoding == "bgr8" and decoded.shape == bgr.shape
    grey, encoding = decode_compressed("jpeg", encode_compressed(bgr[:, :, 1].copy(), "mono8", "jpeg"))
    assert encoding == "mono8" and grey.shape == bgr.shape[:2]


def test_compressed_format_string_matches_image_transport():
    assert compressed_format_string("rgb8", "jpeg") == "rgb8; jpeg compressed bgr8"
    assert compressed_format_string("rgba8", "jpeg") == "rgba8; jpeg compressed bgr8"
    assert compressed_format_string("rgba8", "png") == "rgba8; png compressed bgra8"
    assert compressed_format_string("mono16", "png") == "mono16; png compressed mono16"


@pytest.mark.parametrize(
    ("array", "encoding", "fmt", "message"),
    [
        (np.zeros((4, 4), np.uint16), "mono16", "jpeg", "8-bit"),
        (np.zeros((4, 4), np.float32), "32FC1", "png", "cannot be stored"),
        (np.zeros((4, 4), np.uint8), "mono8", "webp", "unsupported compressed format"),
        (np.zeros((4, 4), np.uint16), "mono8", "png", "needs dtype"),
    ],
)
def test_compression_errors(array, encoding, fmt, message):
    with pytest.raises(ImageEncodingError, match=message):
        encode_compressed(array, encoding, fmt)


@pytest.mark.parametrize(
    ("fmt", "data", "message"),
    [
        ("jpeg", b"", "no data"),
        ("png", b"definitely not an image", "cannot decode"),
        ("16UC1; compressedDepth png", b"\0" * 20, "compressedDepth"),
    ],
)
def test_decompression_errors(fmt, data, message):
    with pytest.raises(ImageEncodingError, match=message):
        decode_compressed(fmt, data)


def test_truncated_jpeg_header_is_rejected():
    data = encode_compressed(smooth_bgr(), "bgr8", "jpeg")
    with pytest.raises(ImageEncodingError, match="cannot decode"):
        decode_compressed("jpeg", data[:20])


def test_decompression_respects_the_pixel_limit():
    data = encode_compressed(smooth_bgr(), "bgr8", "png")
    with pytest.raises(ImageEncodingError, match="exceeds the limit"):
        decode_compressed("png", data, max_pixels=100)


def test_any_image_message_decodes_through_one_helper():
    """ROS messages (array.array data), rosbags messages (numpy data) and ImageFields decode alike."""
    import array
    from types import SimpleNamespace

    from semloc_ros.core.image_codec import image_message_to_array

    rgb = random_image("rgb8", 3, 4)
    fields = array_to_image_fields(rgb, "rgb8")
    ros_like = SimpleNamespace(**{**vars(fields), "data": array.array("B", fields.data)})
    bag_like = SimpleNamespace(**{**vars(fields), "data": np.frombuffer(fields.data, np.uint8)})
    for message in (fields, ros_like, bag_like):
        np.testing.assert_array_equal(image_message_to_array(message), rgb)
    with pytest.raises(ImageEncodingError, match="pixels"):
        image_message_to_array(fields, max_pixels=4)
