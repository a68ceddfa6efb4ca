"""service.gateway.images on its own: what it refuses, and that it says which file and why."""

import pytest
from gateway.image_files import chunk, inflating_to, jpeg, png

from service.gateway import images
from service.gateway.errors import Limit
from service.gateway.images import ImageError, Upload
from service.version_contract import InputSpec

DIGIT = InputSpec("image", (8, 8, 1), "float32", (0.0, 16.0))
IMAGE_PIXELS = Limit(64 * 64, "NNSERVE_MAX_IMAGE_PIXELS")
REQUEST_PIXELS = Limit(3 * 64 * 64, "NNSERVE_MAX_REQUEST_PIXELS")


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (jpeg()[:200], ["Truncated"]),
        (png(8, 8, chunk(b"zTXt", b"k\x00\x00" + inflating_to(50_000_000))), ["too large"]),
        (png(8, 8, chunk(b"iCCP", b"p\x00\x00" + inflating_to(50_000_000))), ["too large"]),
        # Ten text chunks of 900 KB each: each under the per-chunk limit, together over the total.
        (
            png(8, 8, *[chunk(b"zTXt", b"k\x00\x00" + inflating_to(900_000)) for _ in range(10)]),
            ["text chunks"],
        ),
    ],
    ids=["truncated-jpeg", "ztxt-bomb", "iccp-bomb", "many-text-chunks"],
)
def test_unreadable_images_are_image_errors_naming_the_file(data: bytes, words: list[str]):
    with pytest.raises(ImageError) as caught:
        images.to_model_batch([Upload("upload.png", data)], DIGIT, IMAGE_PIXELS, REQUEST_PIXELS)
    assert caught.value.message.startswith("upload.png: ")
    for word in words:
        assert word in caught.value.message


def test_the_pixels_of_all_images_together_are_limited_before_any_is_decoded():
    uploads = [Upload(f"{i}.png", png(64, 64)) for i in range(3)]
    assert images.to_model_batch(uploads, DIGIT, IMAGE_PIXELS, REQUEST_PIXELS).shape == (3, 8, 8, 1)
    broken = Upload("broken.png", png(64, 64)[:-30])  # decoding it would fail
    with pytest.raises(ImageError) as caught:
        images.to_model_batch([*uploads, broken], DIGIT, IMAGE_PIXELS, REQUEST_PIXELS)
    assert caught.value.message == (
        "the 4 images have 16384 pixels together, more than the limit of 12288 "
        "(NNSERVE_MAX_REQUEST_PIXELS) per request"
    )


def test_an_image_over_the_pixel_limit_names_the_setting():
    with pytest.raises(ImageError) as caught:
        images.to_model_batch([Upload("big.png", png(65, 64))], DIGIT, IMAGE_PIXELS, REQUEST_PIXELS)
    assert caught.value.message == (
        "big.png: 65x64 pixels is more than the limit of 4096 (NNSERVE_MAX_IMAGE_PIXELS) pixels"
    )
