"""service.gateway.images on its own: what it refuses, and that it says which file and why."""

import pytest
from gateway.image_files import chunk, inflating_to, jpeg, png

from service.gateway import images
from service.gateway.images import ImageError, ImageInputSpec

DIGIT = ImageInputSpec("image", 8, 8, 1, (0.0, 16.0))


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
        images.to_model_input(data, "upload.png", DIGIT, 4096 * 4096)
    assert caught.value.message.startswith("upload.png: ")
    for word in words:
        assert word in caught.value.message
