"""Image conversion with cv_bridge's semantics on raw ``sensor_msgs/Image`` fields (ROS-free).

Raw images are described by the fields of ``sensor_msgs/Image`` (height, width, encoding, is_bigendian, step,
data) so that the conversion can be tested without rclpy; :mod:`semloc_ros.ros.conversions` wraps these
functions for real messages. Compressed images are decoded and encoded with OpenCV, whose colour order is
BGR(A), as cv_bridge does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

MAX_IMAGE_PIXELS = 8192 * 8192
"""Default upper bound on height*width accepted by the decoders (guards against absurd headers)."""


class ImageEncodingError(ValueError):
    """An image cannot be converted: unsupported encoding, inconsistent fields or corrupt data."""


ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "rgb16": (np.dtype(np.uint16), 3),
    "bgr16": (np.dtype(np.uint16), 3),
    "rgba16": (np.dtype(np.uint16), 4),
    "bgra16": (np.dtype(np.uint16), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "8UC3": (np.dtype(np.uint8), 3),
    "8UC4": (np.dtype(np.uint8), 4),
    "16UC1": (np.dtype(np.uint16), 1),
    "16SC1": (np.dtype(np.int16), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "64FC1": (np.dtype(np.float64), 1),
}
"""Supported encodings: name -> (native-order element dtype, number of channels)."""

CompressedFormat = Literal["jpeg", "png"]

# Channel order of the 3/4-channel encodings (cv_bridge treats 8UC3/8UC4 as BGR(A)).
_BGR_ORDER = {"bgr8", "bgra8", "bgr16", "bgra16", "8UC3", "8UC4"}
_RGB_ORDER = {"rgb8", "rgba8", "rgb16", "rgba16"}
# encoding -> (encoding stored in a compressed image, whether red and blue are swapped on the way).
_COMPRESSED_STORAGE = {
    "mono8": ("mono8", False),
    "8UC1": ("mono8", False),
    "bgr8": ("bgr8", False),
    "8UC3": ("bgr8", False),
    "rgb8": ("bgr8", True),
    "bgra8": ("bgra8", False),
    "8UC4": ("bgra8", False),
    "rgba8": ("bgra8", True),
    "mono16": ("mono16", False),
    "16UC1": ("mono16", False),
    "bgr16": ("bgr16", False),
    "rgb16": ("bgr16", True),
    "bgra16": ("bgra16", False),
    "rgba16": ("bgra16", True),
}


def encoding_info(encoding: str) -> tuple[np.dtype, int]:
    """Return (dtype, channels) of ``encoding`` or raise :class:`ImageEncodingError`."""
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ImageEncodingError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(sorted(ENCODINGS))}"
        ) from None


def _check_size(height: int, width: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise ImageEncodingError(f"image has no pixels: height={height}, width={width}")
    if height * width > max_pixels:
        raise ImageEncodingError(
            f"image of {width}x{height} = {height * width} pixels exceeds the limit of {max_pixels} pixels"
        )


def image_fields_to_array(
    *,
    height: int,
    width: int,
    encoding: str,
    is_bigendian: bool | int,
    step: int,
    data,
    max_pixels: int = MAX_IMAGE_PIXELS,
    copy: bool = True,
) -> np.ndarray:
    """Decode raw image fields into a C-contiguous, native-endian array (owned unless ``copy=False``).

    Rows may be padded (``step`` larger than the packed row size); bytes after ``step * height`` are ignored.
    Returns an HxW array for one-channel encodings and HxWxC otherwise. ``copy=False``: a view of ``data`` where
    its layout allows (packed rows, native byte order), e.g. no 6 MB copy of a 1080p rgb8 frame; it is valid as
    long as ``data`` is and shares its writes.
    """
    dtype, channels = encoding_info(encoding)
    height, width, step = int(height), int(width), int(step)
    _check_size(height, width, max_pixels)
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageEncodingError(
            f"step {step} is smaller than a packed row of {width} x {channels} x {dtype.itemsize} = "
            f"{row_bytes} bytes for encoding {encoding!r}"
        )
    try:
        buffer = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):
        buffer = np.asarray(data, dtype=np.uint8).reshape(-1)
    if buffer.size < step * height:
        raise ImageEncodingError(
            f"image data has {buffer.size} bytes, expected at least step * height = {step} * {height} = {step * height}"
        )
    rows = buffer[: step * height].reshape(height, step)[:, :row_bytes]
    source_dtype = dtype.newbyteorder(">" if is_bigendian else "<")
    # The copy packs the rows; astype converts to native byte order (a no-op copy when already native).
    packed = np.ascontiguousarray(rows).view(source_dtype)
    shape = (height, width) if channels == 1 else (height, width, channels)
    return packed.reshape(shape).astype(dtype, order="C", copy=copy)


@dataclass
class ImageFields:
    """The fields of a ``sensor_msgs/Image`` (little-endian, unpadded when produced by this module)."""

    height: int
    width: int
    encoding: str
    is_bigendian: bool
    step: int
    data: bytes

    def to_array(self, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
        """Decode these fields with :func:`image_fields_to_array`."""
        return image_message_to_array(self, max_pixels)


def image_message_to_array(message, max_pixels: int = MAX_IMAGE_PIXELS, copy: bool = True) -> np.ndarray:
    """:func:`image_fields_to_array` of anything with the fields of a ``sensor_msgs/Image`` (a ROS message, a
    rosbags message, :class:`ImageFields`)."""
    return image_fields_to_array(
        height=message.height,
        width=message.width,
        encoding=message.encoding,
        is_bigendian=message.is_bigendian,
        step=message.step,
        data=message.data,
        max_pixels=max_pixels,
        copy=copy,
    )


def check_array_encoding(array: np.ndarray, encoding: str) -> tuple[np.dtype, int]:
    """Check that ``array`` has the dtype and channel count of ``encoding``; return (dtype, channels).

    One-channel encodings accept HxW or HxWx1 arrays. The byte order of the array does not matter.
    """
    dtype, channels = encoding_info(encoding)
    if not isinstance(array, np.ndarray):
        raise ImageEncodingError(f"expected a numpy array, got {type(array).__name__}")
    if array.dtype.newbyteorder("=") != dtype:
        raise ImageEncodingError(f"encoding {encoding!r} needs dtype {dtype}, got array of dtype {array.dtype}")
    if array.ndim == 2:
        array_channels = 1
    elif array.ndim == 3:
        array_channels = array.shape[2]
    else:
        raise ImageEncodingError(f"expected an HxW or HxWxC array, got shape {array.shape}")
    if array_channels != channels:
        raise ImageEncodingError(f"encoding {encoding!r} needs {channels} channel(s), got array of shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageEncodingError(f"image has no pixels: shape {array.shape}")
    return dtype, channels


def array_to_image_fields(array: np.ndarray, encoding: str) -> ImageFields:
    """Encode ``array`` as little-endian, unpadded raw image fields of ``encoding``."""
    dtype, channels = check_array_encoding(array, encoding)
    height, width = array.shape[:2]
    little_endian = np.ascontiguousarray(array, dtype=dtype.newbyteorder("<"))
    return ImageFields(
        height=int(height),
        width=int(width),
        encoding=encoding,
        is_bigendian=False,
        step=int(width * channels * dtype.itemsize),
        data=little_endian.tobytes(),
    )


def _min_max_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale finite values linearly so that their minimum is 0 and maximum 255; non-finite values become 0."""
    values = values.astype(np.float64)
    finite = np.isfinite(values)
    out = np.zeros(values.shape, dtype=np.uint8)
    if not finite.any():
        return out
    low, high = values[finite].min(), values[finite].max()
    if high > low:
        scaled = (values[finite] - low) * 255.0 / (high - low)
        out[finite] = np.rint(scaled).astype(np.uint8)
    return out


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map floats in [0, 1] to [0, 255] (clipping below 0); min-max normalise when the maximum exceeds 1."""
    finite = np.isfinite(values)
    if finite.any() and values[finite].max() > 1.0:
        return _min_max_to_uint8(values)
    clipped = np.clip(np.where(finite, values, 0.0), 0.0, 1.0)
    return np.rint(clipped * 255.0).astype(np.uint8)


def to_rgb8(array: np.ndarray, encoding: str) -> np.ndarray:
    """Convert an image of ``encoding`` into an HxWx3 ``uint8`` RGB array (model input).

    Colour images are reordered (8UC3/8UC4 are taken as BGR(A) like cv_bridge) and lose their alpha channel;
    16-bit colour is scaled by 255/65535. One-channel images are replicated to grey: mono8/8UC1 as they are,
    16-bit integers min-max normalised, floats clipped to [0, 1] * 255 when their maximum is at most 1 and
    min-max normalised otherwise (NaN/inf become 0).
    """
    dtype, channels = check_array_encoding(array, encoding)
    if channels == 1:
        grey = array.reshape(array.shape[:2])
        if dtype == np.uint8:
            grey8 = grey
        elif dtype.kind == "f":
            grey8 = _float_to_uint8(grey)
        elif dtype.kind in "iu":
            grey8 = _min_max_to_uint8(grey)
        else:
            raise ImageEncodingError(f"cannot convert encoding {encoding!r} to rgb8")
        return np.ascontiguousarray(np.repeat(grey8[:, :, None], 3, axis=2))
    if encoding in _BGR_ORDER:
        rgb = array[:, :, 2::-1]
    elif encoding in _RGB_ORDER:
        rgb = array[:, :, :3]
    else:
        raise ImageEncodingError(f"cannot convert encoding {encoding!r} to rgb8")
    if dtype == np.uint16:
        rgb = np.rint(rgb.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def _encoding_of_decoded(image: np.ndarray) -> str:
    channels = 1 if image.ndim == 2 else image.shape[2]
    names = {
        (np.dtype(np.uint8), 1): "mono8",
        (np.dtype(np.uint8), 3): "bgr8",
        (np.dtype(np.uint8), 4): "bgra8",
        (np.dtype(np.uint16), 1): "mono16",
        (np.dtype(np.uint16), 3): "bgr16",
        (np.dtype(np.uint16), 4): "bgra16",
    }
    try:
        return names[(image.dtype, channels)]
    except KeyError:
        raise ImageEncodingError(
            f"decoded image of dtype {image.dtype} with {channels} channel(s) has no ROS encoding"
        ) from None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def compressed_image_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) declared by a PNG or JPEG header, read without decoding; None if not found.

    Lets the decoder refuse a "decompression bomb" (a small payload declaring a huge image) before OpenCV
    allocates the image.
    """
    if data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    if data[:2] != b"\xff\xd8":
        return None
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD9:  # markers without a length field
            position += 2
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if marker in _JPEG_SOF_MARKERS:
            if position + 9 > len(data):
                return None
            return (int.from_bytes(data[position + 5 : position + 7], "big"),
                    int.from_bytes(data[position + 7 : position + 9], "big"))
        if marker == 0xDA or length < 2:  # start of scan without a frame header, or a corrupt segment
            return None
        position += 2 + length
    return None


def decode_compressed(format: str, data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[np.ndarray, str]:
    """Decode a ``sensor_msgs/CompressedImage`` payload with OpenCV into (array, encoding).

    The image is decoded unchanged (no EXIF rotation, bit depth and alpha kept), so the encoding is ``bgr8``
    or ``mono8`` for ordinary JPEG/PNG and ``bgra8``, ``mono16``, ``bgr16`` or ``bgra16`` for PNGs with alpha
    or 16 bits. ``format`` ("jpeg", "png", "bgr8; jpeg compressed bgr8", ...) is informational only, except
    that image_transport's ``compressedDepth`` payloads are refused.
    """
    if "compresseddepth" in format.lower().replace(" ", ""):
        raise ImageEncodingError(f"compressedDepth images are not supported (format {format!r})")
    payload = bytes(data)
    buffer = np.frombuffer(payload, dtype=np.uint8)
    if buffer.size == 0:
        raise ImageEncodingError(f"compressed image ({format!r}) has no data")
    declared = compressed_image_size(payload)
    if declared is not None:
        _check_size(*declared, max_pixels)  # refuse before OpenCV allocates the image
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageEncodingError(
            f"cannot decode compressed image ({format!r}, {buffer.size} bytes): corrupt or unknown format"
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    _check_size(image.shape[0], image.shape[1], max_pixels)
    return np.ascontiguousarray(image), _encoding_of_decoded(image)


def compressed_storage_encoding(encoding: str, fmt: CompressedFormat = "png") -> str:
    """The encoding in which an image of ``encoding`` is stored as ``fmt`` (OpenCV's BGR(A) order)."""
    encoding_info(encoding)
    if fmt not in ("jpeg", "png"):
        raise ImageEncodingError(f"unsupported compressed format {fmt!r}; use 'jpeg' or 'png'")
    try:
        storage = _COMPRESSED_STORAGE[encoding][0]
    except KeyError:
        raise ImageEncodingError(f"encoding {encoding!r} cannot be stored in a compressed image") from None
    if fmt == "jpeg":
        if not storage.endswith("8"):
            raise ImageEncodingError(f"JPEG stores 8-bit images only; encode {encoding!r} as PNG")
        storage = storage.replace("bgra", "bgr")
    return storage


def compressed_format_string(encoding: str, fmt: CompressedFormat) -> str:
    """The ``CompressedImage.format`` string image_transport writes, e.g. ``"rgb8; jpeg compressed bgr8"``."""
    return f"{encoding}; {fmt} compressed {compressed_storage_encoding(encoding, fmt)}"


def encode_compressed(
    array: np.ndarray,
    encoding: str,
    fmt: CompressedFormat = "jpeg",
    *,
    jpeg_quality: int = 95,
    png_compression: int = 3,
) -> bytes:
    """Compress an image of ``encoding`` to JPEG or PNG bytes (stored in OpenCV's BGR(A) order).

    JPEG accepts only 8-bit images and drops an alpha channel; PNG also keeps 16 bits and alpha.
    """
    dtype, channels = check_array_encoding(array, encoding)
    storage = compressed_storage_encoding(encoding, fmt)
    image = array.reshape(array.shape[:2]) if channels == 1 else array
    if _COMPRESSED_STORAGE[encoding][1]:
        image = image[:, :, [2, 1, 0, 3][:channels]]
    if fmt == "jpeg":
        image = image[:, :, :3] if channels == 4 else image
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    else:
        params = [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)]
    image = np.ascontiguousarray(image, dtype=dtype)
    try:
        ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", image, params)
    except cv2.error as error:
        raise ImageEncodingError(f"OpenCV failed to encode a {storage} image as {fmt}: {error}") from error
    if not ok:
        raise ImageEncodingError(f"OpenCV failed to encode a {storage} image as {fmt}")
    return encoded.tobytes()
