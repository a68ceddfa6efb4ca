"""service/version_contract.py: nnserve.json's input entry, and the one way images become input.

The last tests feed the same image files through the training pipeline's dataset loading and the
gateway's `:classify_images` decoding, and find the same arrays.
"""

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.datasets import (
    image_dataset,
    load_dataset,
    series_dataset,
    table_dataset,
    text_dataset,
    token_dataset,
)
from pipeline.spec import ImageFolderDataset, ImageListDataset
from service.gateway import images
from service.gateway.errors import Limit
from service.version_contract import (
    RESAMPLING,
    ContractError,
    InputSpec,
    image_to_input,
)

DIGIT = InputSpec("image", (8, 8, 1), "float32", (0.0, 16.0))
PIXELS_1 = InputSpec("image", (4, 4, 1), "float32", (0.0, 255.0))
PIXELS_3 = InputSpec("image", (4, 4, 3), "float32", (0.0, 255.0))
IMAGE_PIXELS = Limit(1 << 20, "NNSERVE_MAX_IMAGE_PIXELS")
REQUEST_PIXELS = Limit(1 << 24, "NNSERVE_MAX_REQUEST_PIXELS")


def as_png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def reopened(image: Image.Image) -> Image.Image:
    """The image as it comes out of a PNG file: what both sides get."""
    return Image.open(io.BytesIO(as_png(image)))


# --- nnserve.json's input entry -----------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        image_dataset(np.zeros((2, 28, 28), np.uint8), np.array([0, 1]), ["a", "b"]).input_spec,
        image_dataset(np.ones((2, 5, 6, 3), np.float32), np.array([0, 1]), ["a", "b"]).input_spec,
        table_dataset(
            np.arange(6.0).reshape(3, 2), np.array([0, 1, 0]), ["x", "y"], "regression"
        ).input_spec,
        series_dataset(np.arange(40.0), window=12, horizon=1).input_spec,
        token_dataset([[1, 5, 9], [1, 7]], np.array([0, 1]), ["neg", "pos"], 100, 20).input_spec,
        text_dataset(np.array(["a b", "c"]), np.array([0, 1]), ["neg", "pos"], 50, 5).input_spec,
    ],
    ids=["uint8-image", "colour-image", "features", "series", "token-ids", "text"],
)
def test_every_input_the_pipeline_describes_reads_back_from_its_json(spec: InputSpec):
    written = json.loads(json.dumps(spec.to_json()))
    assert InputSpec.from_json(written) == spec
    assert InputSpec.from_json(written).to_json() == written


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        # digits-cnn's entry as every nnserve version so far has written it.
        (
            {
                "channels": 1,
                "dtype": "float32",
                "image_size": [8, 8],
                "name": "image",
                "shape": [8, 8, 1],
                "value_range": [0.0, 16.0],
            },
            DIGIT,
        ),
        # A hand-written image entry: image_size and channels are enough.
        (
            {"name": "image", "image_size": [8, 8], "channels": 1, "value_range": [0, 16]},
            DIGIT,
        ),
        (
            {
                "name": "sequence",
                "shape": [None],
                "dtype": "int32",
                "value_range": [0.0, 9999.0],
                "sequence_length": 200,
                "vocabulary_size": 10000,
            },
            InputSpec("sequence", (200,), "int32", (0.0, 9999.0), 10000, 200),
        ),
        (
            {
                "name": "text",
                "shape": [],
                "dtype": "string",
                "sequence_length": 5,
                "vocabulary_size": 50,
            },
            InputSpec("text", (), "string", None, 50, 5),
        ),
    ],
    ids=["digits", "hand-written-image", "imdb", "text"],
)
def test_entries_already_written_are_read(entry: dict, expected: InputSpec):
    assert InputSpec.from_json(entry) == expected


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        (None, "the input entry is missing, not a JSON object"),
        ([1, 2], "not a JSON object"),
        ({"name": "audio", "shape": [3]}, "the input's name is 'audio'"),
        ({"name": "image", "image_size": [8], "channels": 1}, "image_size is a list ([8])"),
        ({"name": "image", "image_size": [8, 8], "value_range": [0, 1]}, "needs its channels"),
        ({"name": "image", "image_size": [8, 8], "channels": "1"}, "channels is a str ('1')"),
        ({"name": "image", "image_size": [8, 8], "channels": 1}, "value_range is missing"),
        ({"name": "features", "shape": [-2], "dtype": "float32"}, "shape is a list ([-2])"),
        ({"name": "features", "shape": [2]}, "dtype is missing"),
        ({"name": "sequence", "shape": [None], "vocabulary_size": 9}, "needs its sequence_length"),
    ],
)
def test_an_unusable_entry_is_a_contract_error_saying_what_is_wrong(entry, words: str):
    with pytest.raises(ContractError) as caught:
        InputSpec.from_json(entry)
    assert words in str(caught.value)


def test_images_make_only_image_inputs_of_one_or_three_channels():
    image = Image.new("L", (4, 4))
    with pytest.raises(ContractError, match="the model wants 4 channels; images give 1 or 3"):
        image_to_input(image, InputSpec("image", (4, 4, 4), "float32", (0.0, 1.0)))
    with pytest.raises(ContractError, match="the model's input is 'features', not 'image'"):
        image_to_input(image, InputSpec("features", (4,), "float32", (0.0, 1.0)))


# --- the one image preprocessing function -------------------------------------------------------


def test_grey_values_are_mapped_linearly_onto_the_value_range():
    grey = np.array([[0, 51], [204, 255]], np.uint8)
    array = image_to_input(reopened(Image.fromarray(grey)), replace(DIGIT, shape=(2, 2, 1)))
    assert array.dtype == np.float32 and array.shape == (2, 2, 1)
    np.testing.assert_allclose(array[..., 0], grey * (16 / 255), rtol=1e-6)


def test_in_the_pixels_own_range_the_values_are_the_pixels_exactly():
    grey = np.random.default_rng(1).integers(0, 256, (4, 4), dtype=np.uint8)
    array = image_to_input(reopened(Image.fromarray(grey)), PIXELS_1)
    assert np.array_equal(array[..., 0], grey.astype(np.float32))


def test_invert_turns_dark_ink_on_light_paper_into_light_on_dark():
    grey = np.array([[0, 51], [204, 255]], np.uint8)
    spec = replace(PIXELS_1, shape=(2, 2, 1))
    inverted = image_to_input(reopened(Image.fromarray(grey)), spec, invert=True)
    assert inverted[..., 0].tolist() == [[255, 204], [51, 0]]


def test_colour_becomes_grey_by_luma_or_stays_rgb():
    red = reopened(Image.new("RGB", (4, 4), (255, 0, 0)))
    assert np.all(image_to_input(red, PIXELS_1) == 76)  # ITU-R 601-2 luma of pure red
    assert np.all(image_to_input(red, PIXELS_3) == [255, 0, 0])


def test_a_palette_image_gives_what_its_colours_give():
    rgb = Image.fromarray(np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    palette = reopened(rgb.quantize(16))
    assert palette.mode == "P"
    colours = reopened(palette.convert("RGB"))
    for spec in (PIXELS_1, PIXELS_3):
        assert np.array_equal(image_to_input(palette, spec), image_to_input(colours, spec))


def test_transparent_pixels_are_white_paper_whatever_colour_they_store():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = [10, 200, 30]  # stored, but invisible: alpha 0
    rgba[:, 2:] = [0, 0, 0, 255]  # opaque black ink on the right half
    array = image_to_input(reopened(Image.fromarray(rgba)), replace(PIXELS_1, shape=(4, 4, 1)))
    assert np.all(array[:, :2] == 255) and np.all(array[:, 2:] == 0)
    half = reopened(Image.new("RGBA", (4, 4), (0, 0, 0, 128)))  # black ink at half strength
    assert np.all(np.abs(image_to_input(half, PIXELS_3) - 127) <= 1)


def test_a_palette_image_with_a_transparent_colour_lies_on_white_paper():
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 0, 0, 0])  # colours 0 and 1 both black
    palette.paste(1, (0, 0, 2, 4))  # the left half is colour 1 ...
    palette.info["transparency"] = 1  # ... and transparent
    array = image_to_input(reopened(palette), PIXELS_1)
    assert np.all(array[:, :2] == 255) and np.all(array[:, 2:] == 0)


def test_16_bit_grey_is_scaled_to_8_bits_not_clipped():
    deep = np.array([[0, 257 * 3], [257 * 128, 65535]], np.uint16)
    image = reopened(Image.fromarray(deep))
    assert image.mode.startswith("I;16")
    array = image_to_input(image, replace(PIXELS_1, shape=(2, 2, 1)))
    assert array[..., 0].tolist() == [[0, 3], [128, 255]]  # Pillow alone makes 3 and 128 255


def test_images_are_resized_bilinearly_to_the_input_size():
    rng = np.random.default_rng(3)
    picture = Image.fromarray(rng.integers(0, 256, (37, 23), dtype=np.uint8))
    array = image_to_input(reopened(picture), PIXELS_1)
    bilinear = np.asarray(picture.resize((4, 4), Image.Resampling.BILINEAR), np.float32)
    bicubic = np.asarray(picture.resize((4, 4), Image.Resampling.BICUBIC), np.float32)
    assert RESAMPLING == Image.Resampling.BILINEAR
    assert np.array_equal(array[..., 0], bilinear)
    assert not np.array_equal(array[..., 0], bicubic)  # the filter the pipeline used to use


def test_width_and_height_are_not_swapped():
    wide = reopened(Image.new("L", (30, 10), 9))
    assert image_to_input(wide, replace(PIXELS_1, shape=(5, 7, 1))).shape == (5, 7, 1)


# --- the pipeline and the gateway see the same pixels -------------------------------------------


def probe_files() -> dict[str, bytes]:
    """Images of every kind a user may have: modes, sizes, transparency, 16 bits, JPEG."""
    rng = np.random.default_rng(4)
    noise = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    rgba = np.dstack([noise, rng.integers(0, 256, (48, 40), dtype=np.uint8)])
    jpeg = io.BytesIO()
    Image.fromarray(noise).save(jpeg, "JPEG", quality=90)
    return {
        "grey.png": as_png(Image.fromarray(noise[..., 0])),
        "colour.png": as_png(Image.fromarray(noise[:31, :17])),
        "transparent.png": as_png(Image.fromarray(rgba)),
        "palette.png": as_png(Image.fromarray(noise).quantize(32)),
        "deep.png": as_png(Image.fromarray(rng.integers(0, 65536, (20, 26), dtype=np.uint16))),
        "small.png": as_png(Image.fromarray(noise[:3, :2, 1])),
        "photo.jpg": jpeg.getvalue(),
    }


@pytest.mark.parametrize("channels", [1, 3])
def test_image_folders_and_uploads_give_identical_arrays(tmp_path: Path, channels: int):
    files = probe_files()
    for name, data in files.items():
        # Two classes, so that the folder is a dataset; file names sort as `files` does.
        folder = tmp_path / ("a" if name < "e" else "b")
        folder.mkdir(exist_ok=True)
        (folder / name).write_bytes(data)
    dataset = load_dataset(
        ImageFolderDataset(name="image-folder", path=tmp_path, image_size=(6, 5), channels=channels)
    )
    order = sorted(files, key=lambda name: ("a" if name < "e" else "b", name))
    uploaded = upload(dataset.input_spec, {name: files[name] for name in order})
    assert uploaded.shape == (len(files), 6, 5, channels)
    assert np.array_equal(dataset.features.astype(np.float32), uploaded)


def test_a_labels_file_dataset_and_uploads_give_identical_arrays(tmp_path: Path):
    files = probe_files()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "labels.txt").write_text(
        "".join(f"{name} {index % 2}\n" for index, name in enumerate(files))
    )
    dataset = load_dataset(
        ImageListDataset(
            name="image-list",
            path=tmp_path,
            labels_file=tmp_path / "labels.txt",
            image_size=(9, 11),
            channels=3,
        )
    )
    assert np.array_equal(dataset.features.astype(np.float32), upload(dataset.input_spec, files))


def upload(trained: InputSpec, files: dict[str, bytes]) -> np.ndarray:
    """The batch the gateway's :classify_images makes of `files` for a version trained on
    `trained`, read back from its nnserve.json entry as the gateway reads it."""
    entry = json.loads(json.dumps(trained.to_json()))
    uploads = [images.Upload(name, data) for name, data in files.items()]
    spec = images.image_input(entry)
    return images.to_model_batch(uploads, spec, IMAGE_PIXELS, REQUEST_PIXELS)
