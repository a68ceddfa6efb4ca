""":classify_images through a real gateway and model server answers as the exported model does
in this process, fed by service/version_contract.py's preprocessing, for the same image files."""

import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image
from support import DIGITS_SPEC

from pipeline.datasets import load_dataset
from pipeline.preprocess import split_dataset
from pipeline.spec import load_spec
from service.model_repository import METADATA_PATH
from service.version_contract import InputSpec, image_to_input

PROBES_PER_KIND = 6


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def probe_files(digits: np.ndarray) -> dict[bool, dict[str, bytes]]:
    """Held-out 8x8 digits (0..16, light on dark) as a person might upload them, by whether
    they are sent with invert=true: enlarged, in colour, 16-bit, and dark ink on paper."""
    grey = [Image.fromarray((d[..., 0] * (255 / 16)).round().astype(np.uint8)) for d in digits]
    files: dict[bool, dict[str, bytes]] = {False: {}, True: {}}
    for index, digit in enumerate(grey):
        big = digit.resize((64, 64), Image.Resampling.NEAREST)
        files[False][f"{index}-grey.png"] = png(big)
        tinted = Image.merge("RGB", (digit, digit, digit.point(lambda v: v // 2)))
        files[False][f"{index}-colour.png"] = png(tinted.resize((40, 30), Image.Resampling.LANCZOS))
        deep = np.asarray(digit.resize((32, 32), Image.Resampling.BICUBIC), np.uint16) * 257
        files[False][f"{index}-deep.png"] = png(Image.fromarray(deep))
        # Black ink whose strength is its alpha, on a transparent background.
        ink = Image.merge("RGBA", (*[Image.new("L", big.size, 0)] * 3, big))
        files[True][f"{index}-transparent.png"] = png(ink)
        files[True][f"{index}-paper.png"] = png(big.point(lambda v: 255 - v))
    return files


@pytest.fixture(scope="module")
def probes() -> dict[bool, dict[str, bytes]]:
    spec = load_spec(DIGITS_SPEC)
    test = split_dataset(load_dataset(spec.dataset), spec.dataset).test
    return probe_files(test.features[:PROBES_PER_KIND])


@pytest.mark.parametrize("invert", [False, True])
def test_uploaded_images_get_the_answers_of_the_model_in_process(
    gateway, trained_digits, probes, invert: bool
):
    import tensorflow as tf

    files = probes[invert]
    response = httpx.post(
        f"{gateway.url}/v1/models/digits-cnn:classify_images",
        params={"top_k": 10, "invert": str(invert).lower()},
        files=[("files", (name, data, "image/png")) for name, data in files.items()],
        timeout=60,
    )
    assert response.status_code == 200, response.text
    served = np.zeros((len(files), 10), np.float32)
    for row, result in enumerate(response.json()["results"]):
        for entry in result["top_k"]:
            served[row, entry["class_id"]] = entry["probability"]

    metadata = json.loads((trained_digits.version_dir / METADATA_PATH).read_text())
    spec = InputSpec.from_json(metadata["input"])
    batch = np.stack(
        [image_to_input(Image.open(io.BytesIO(data)), spec, invert) for data in files.values()]
    )
    serve = tf.saved_model.load(str(trained_digits.version_dir)).signatures["serving_default"]
    in_process = serve(**{spec.name: tf.constant(batch)})["probabilities"].numpy()

    assert len(set(in_process.argmax(axis=1))) > 1  # the probes are digits, not blank pages
    assert served.argmax(axis=1).tolist() == in_process.argmax(axis=1).tolist()
    np.testing.assert_allclose(served, in_process, atol=1e-5)
