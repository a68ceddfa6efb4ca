"""What the trainer promises about a served version, and how images become its input.

The training pipeline writes `<version>/assets.extra/nnserve.json` when it exports a version;
its "input" entry is an `InputSpec`. The gateway reads the same entry back with
`InputSpec.from_json` to make `:classify_images` uploads into tensors. Image files become model
input through `image_to_input` on both sides (a dataset's image folders and label-file images,
and the gateway's uploads), so a model is served exactly the pixels it was trained on.

No TensorFlow here: the gateway image (base install: numpy and Pillow) imports this module.
"""

import struct
import zlib
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
from PIL import Image

InputName = Literal["image", "sequence", "features", "text"]
_INPUT_NAMES = get_args(InputName)

# Every image is resized with this one filter, in training and in serving alike: a model that
# learnt from bicubic-resized images and is served bilinear-resized ones sees pixels it never
# saw. Bilinear because it is what Keras's `image_dataset_from_directory` and `tf.image.resize`
# use by default, so a model trained here and one trained with Keras's own loaders expect the
# same kind of smoothing. (Pillow's bilinear widens its kernel when it shrinks an image, which
# TensorFlow's does not unless asked to; what matters is that both sides run this function.)
RESAMPLING = Image.Resampling.BILINEAR
# Pixel modes by channel count.
_MODES = {1: "L", 3: "RGB"}
# Transparent pixels are laid on white paper, as a browser shows a PNG on a page: the colour
# a transparent pixel happens to store is invisible to the person who drew the image.
_PAPER = (255, 255, 255, 255)
# 8-bit pixel values (0..255) are mapped onto the input's value range.
PIXEL_MAX = 255.0
# What Pillow raises for image files it cannot read: truncated or corrupt data, and limits it
# enforces (PNG text chunks that inflate too far raise ValueError).
UNREADABLE_IMAGE = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error)


class ContractError(Exception):
    """An nnserve.json input entry that cannot be read, or an input images cannot make."""


@dataclass(frozen=True)
class InputSpec:
    """What a client sends: the signature input's name, per-example shape, dtype and value range.

    The value range tells clients what raw values look like: for images the pixel format's,
    which the model scales by; otherwise the whole dataset's, which the model does not use (it
    learns any scaling from the training split alone, so held-out values stay unseen).
    Token sequences and texts also carry their vocabulary size and sequence length: the model
    maps ids or tokenizes inside its graph. Texts have no value range.
    """

    name: InputName
    shape: tuple[int, ...]
    dtype: str
    value_range: tuple[float, float] | None = None
    vocabulary_size: int | None = None
    sequence_length: int | None = None

    @property
    def is_image(self) -> bool:
        """Images of shape (height, width, channels)."""
        return self.name == "image"

    @property
    def is_text(self) -> bool:
        """One raw string per example, tokenized by the model."""
        return self.name == "text"

    @property
    def is_token_ids(self) -> bool:
        """Word ids, sent by the client as the dataset holds them."""
        return self.vocabulary_size is not None and not self.is_text

    @property
    def is_tokenized(self) -> bool:
        """The model's layers work on word ids: sent as such, or made from text by the model."""
        return self.vocabulary_size is not None

    def to_json(self) -> dict[str, Any]:
        """nnserve.json's "input" entry."""
        description: dict[str, Any] = {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
        }
        if self.value_range is not None:
            description["value_range"] = list(self.value_range)
        if self.is_image:
            height, width, channels = self.shape
            description["image_size"] = [height, width]
            description["channels"] = channels
        if self.is_tokenized:
            description["sequence_length"] = self.sequence_length
            description["vocabulary_size"] = self.vocabulary_size
        if self.is_token_ids:
            # Reviews of any length are accepted; the model pads or cuts them to the length.
            description["shape"] = [None]
        return description

    @classmethod
    def from_json(cls, description: Any) -> "InputSpec":
        """The spec an "input" entry describes; raises ContractError naming what is wrong.

        Reads every entry nnserve has written. An image entry may leave out "shape" and "dtype"
        (hand-written ones do): its image_size and channels give the shape, and images are
        float32 pixel values.
        """
        if not isinstance(description, dict):
            raise ContractError(f"the input entry is {_kind(description)}, not a JSON object")
        name = description.get("name")
        if name not in _INPUT_NAMES:
            raise ContractError(f"the input's name is {name!r}; expected one of {_INPUT_NAMES}")
        vocabulary_size = _count(description, "vocabulary_size")
        sequence_length = _count(description, "sequence_length")
        if name == "image":
            height, width = _counts(description, "image_size", 2)
            channels = _count(description, "channels")
            if channels is None:
                raise ContractError("an image input needs its channels")
            shape: tuple[int, ...] = (height, width, channels)
        elif vocabulary_size is not None and name != "text":
            # Token ids are written with shape [null]: any length, padded or cut to this one.
            if sequence_length is None:
                raise ContractError("a token id input needs its sequence_length")
            shape = (sequence_length,)
        else:
            shape = tuple(_counts(description, "shape", None))
        dtype = description.get("dtype", "float32" if name == "image" else None)
        if not isinstance(dtype, str):
            raise ContractError(f"the input's dtype is {_kind(dtype)}; expected a name")
        value_range = description.get("value_range")
        if value_range is not None or name == "image":
            value_range = _range(value_range)
        return cls(name, shape, dtype, value_range, vocabulary_size, sequence_length)


def check_takes_images(spec: InputSpec) -> None:
    """Raise ContractError unless `image_to_input` can make `spec`'s input from images."""
    if not spec.is_image:
        raise ContractError(f"the model's input is {spec.name!r}, not 'image'")
    channels = spec.shape[-1]
    if channels not in _MODES:
        raise ContractError(f"the model wants {channels} channels; images give 1 or 3")


def image_to_input(image: Image.Image, spec: InputSpec, invert: bool = False) -> np.ndarray:
    """The float32 (height, width, channels) array the model is fed for `image`.

    16-bit grey is reduced to 8 bits; the image is resized with RESAMPLING, laid on white paper
    if it has transparency, and converted to grey or RGB; then `invert` (255 - value: dark ink
    on light paper becomes light on dark) and the 0..255 pixel values are mapped linearly onto
    the value range. With the value range (0, 255) the values are the 8-bit pixels, exactly.
    Raises one of UNREADABLE_IMAGE for image data Pillow cannot read.
    """
    check_takes_images(spec)
    height, width, channels = spec.shape
    image = _eight_bit(image)
    if image.has_transparency_data:
        # Resized first, so that only the small image is copied onto paper, not a large upload;
        # Pillow resizes with premultiplied alpha, so the order gives the same picture, to
        # within rounding.
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        small = rgba.resize((width, height), RESAMPLING)
        paper = Image.new("RGBA", small.size, _PAPER)
        pixels = Image.alpha_composite(paper, small).convert(_MODES[channels])
    else:
        pixels = image.convert(_MODES[channels]).resize((width, height), RESAMPLING)
    array = np.asarray(pixels, dtype=np.float32).reshape(height, width, channels)
    if invert:
        array = PIXEL_MAX - array
    low, high = spec.value_range
    return low + array * ((high - low) / PIXEL_MAX)


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit grey (PNG's "I;16" modes, or "I" as older Pillow opens them) rounded to 8 bits.

    Pillow's own conversion clips such values at 255 instead, which turns all but the darkest
    pixels of a 16-bit image white.
    """
    if image.mode != "I" and not image.mode.startswith("I;16"):
        return image
    values = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
    values += 128  # (v + 128) // 257 is v / 257 rounded to the nearest integer
    values //= 257
    return Image.fromarray(values.astype(np.uint8))


def _kind(value: Any) -> str:
    return "missing" if value is None else f"a {type(value).__name__} ({value!r:.60})"


def _positive(value: Any) -> bool:
    return type(value) is int and value > 0


def _counts(description: dict, key: str, length: int | None) -> list[int]:
    """A list of positive integers (`length` of them, when given)."""
    values = description.get(key)
    if (
        not isinstance(values, list)
        or (length is not None and len(values) != length)
        or not all(map(_positive, values))
    ):
        many = f"{length} positive integers" if length else "a list of positive integers"
        raise ContractError(f"the input's {key} is {_kind(values)}; expected {many}")
    return values


def _count(description: dict, key: str) -> int | None:
    """A positive integer, or None when the entry has none."""
    value = description.get(key)
    if value is not None and not _positive(value):
        raise ContractError(f"the input's {key} is {_kind(value)}; expected a positive integer")
    return value


def _range(value_range: Any) -> tuple[float, float]:
    if (
        not isinstance(value_range, list)
        or len(value_range) != 2
        or not all(type(v) in (int, float) for v in value_range)
    ):
        raise ContractError(
            f"the input's value_range is {_kind(value_range)}; expected [low, high] numbers"
        )
    low, high = value_range
    return float(low), float(high)
