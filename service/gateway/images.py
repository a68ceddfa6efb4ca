"""Uploaded PNG / JPEG files -> arrays in a model's input units (nnserve.json's input spec).

The pixels are made by service/version_contract.py's `image_to_input`, the function the
training pipeline makes its image datasets with.

Each image's size is read from its header and checked, and so is the request's total, before
any pixel is decoded, so a small file that claims a huge canvas (a decompression bomb) is
refused without using the memory.
"""

import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from service.gateway.errors import GatewayError, Limit
from service.model_repository import METADATA_PATH
from service.version_contract import (
    UNREADABLE_IMAGE,
    ContractError,
    InputSpec,
    check_takes_images,
    image_to_input,
)

ACCEPTED_FORMATS = ("PNG", "JPEG")
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


def image_input(model_input: object) -> InputSpec:
    """The image input nnserve.json's "input" entry describes, or an ImageError saying why not."""
    try:
        spec = InputSpec.from_json(model_input)
    except ContractError as error:
        raise ImageError(f"the model's {METADATA_PATH} input is unusable: {error}") from None
    try:
        check_takes_images(spec)
    except ContractError as error:
        raise ImageError(f"the model does not take images: {error}") from None
    return spec


def to_model_batch(
    uploads: Sequence[Upload],
    spec: InputSpec,
    max_image_pixels: Limit,
    max_request_pixels: Limit,
    invert: bool = False,
) -> np.ndarray:
    """Every upload as one float32 [n, height, width, channels] batch in the spec's units
    (`spec` from `image_input`).

    All headers are read and checked before any image is decoded, and images are decoded one at
    a time. `invert` turns dark-on-light drawings into the light-on-dark digits models are
    trained on.
    """
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
    except UNREADABLE_IMAGE as error:
        raise ImageError(f"{filename}: unreadable image header ({error})") from None
    width, height = image.size
    if width * height > max_pixels.value:
        raise ImageError(
            f"{filename}: {width}x{height} pixels is more than the limit of {max_pixels} pixels"
        )
    return image


def _decode(image: Image.Image, filename: str, spec: InputSpec, invert: bool) -> np.ndarray:
    try:
        image.load()
        return image_to_input(image, spec, invert)
    except UNREADABLE_IMAGE as error:
        raise ImageError(f"{filename}: corrupt image data ({error})") from None
