"""Uploaded PNG / JPEG files -> arrays in a model's input units (nnserve.json's input spec).

Each image's size is read from its header and checked, and so is the request's total, before
any pixel is decoded, so a small file that claims a huge canvas (a decompression bomb) is
refused without using the memory.
"""

import io
import math
import struct
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from service.gateway.errors import GatewayError, Limit

ACCEPTED_FORMATS = ("PNG", "JPEG")
_MODES = {1: "L", 3: "RGB"}
# What Pillow raises for files it cannot read: truncated or corrupt data, and limits it enforces
# (PNG text chunks that inflate too far raise ValueError).
_UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error)
# PNG text and ICC profile chunks are inflated while the header is read, before any size check;
# nothing here uses them, so each may inflate to 1 MiB and all text chunks of a file to 4 MiB
# (Pillow's own total is 64 MiB).
PngImagePlugin.MAX_TEXT_CHUNK = 1024 * 1024
PngImagePlugin.MAX_TEXT_MEMORY = 4 * 1024 * 1024


class ImageError(GatewayError):
    """An upload that is not a usable image; `message` names the file and the problem."""


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its name (for messages) and its bytes."""

    filename: str
    data: bytes


@dataclass(frozen=True)
class ImageInputSpec:
    """How a model wants its images: from nnserve.json's "input" entry."""

    name: str
    height: int
    width: int
    channels: int
    value_range: tuple[float, float]

    @classmethod
    def from_metadata(cls, model_input: dict) -> "ImageInputSpec":
        try:
            height, width = model_input["image_size"]
            channels = int(model_input["channels"])
            low, high = model_input["value_range"]
            return cls(model_input["name"], int(height), int(width), channels, (low, high))
        except (KeyError, TypeError, ValueError):
            raise ImageError(
                "the model does not take images: its nnserve.json input has no image_size, "
                "channels and value_range"
            ) from None


def to_model_batch(
    uploads: Sequence[Upload],
    spec: ImageInputSpec,
    max_image_pixels: Limit,
    max_request_pixels: Limit,
    invert: bool = False,
) -> np.ndarray:
    """Every upload as one float32 [n, height, width, channels] batch in the spec's units.

    All headers are read and checked before any image is decoded, and images are decoded one at
    a time. `invert` turns dark-on-light drawings into the light-on-dark digits models are
    trained on.
    """
    if spec.channels not in _MODES:
        raise ImageError(f"the model wants {spec.channels} channels; images give 1 or 3")
    total = sum(math.prod(_open(upload, max_image_pixels).size) for upload in uploads)
    if total > max_request_pixels.value:
        raise ImageError(
            f"the {len(uploads)} images have {total} pixels together, more than the limit of "
            f"{max_request_pixels} per request"
        )
    return np.stack(
        [
            _decode(_open(upload, max_image_pixels), upload.filename, spec, invert)
            for upload in uploads
        ]
    )


def _open(upload: Upload, max_pixels: Limit) -> Image.Image:
    """The image with its header read and its size checked; no pixel is decoded yet."""
    filename = upload.filename
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(upload.data), formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"{filename}: the image claims more pixels than the limit of {max_pixels} pixels"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(f"{filename}: not a PNG or JPEG image (or a corrupt one)") from None
    except _UNREADABLE as error:
        raise ImageError(f"{filename}: unreadable image header ({error})") from None
    width, height = image.size
    if width * height > max_pixels.value:
        raise ImageError(
            f"{filename}: {width}x{height} pixels is more than the limit of {max_pixels} pixels"
        )
    return image


def _decode(image: Image.Image, filename: str, spec: ImageInputSpec, invert: bool) -> np.ndarray:
    try:
        image.load()
        pixels = image.convert(_MODES[spec.channels]).resize(
            (spec.width, spec.height), Image.Resampling.BILINEAR
        )
    except _UNREADABLE as error:
        raise ImageError(f"{filename}: corrupt image data ({error})") from None
    array = np.asarray(pixels, dtype=np.float32).reshape(spec.height, spec.width, spec.channels)
    if invert:
        array = 255.0 - array
    low, high = spec.value_range
    return low + array * ((high - low) / 255.0)
