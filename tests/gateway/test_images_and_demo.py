"""Beyond TF Serving: the model list, image uploads with labelled top-k, the demo page."""

import io

import httpx
import numpy as np
import pytest
from gateway.browser import headless_chromium, needs_chromium
from gateway.servers import HALF_PLUS_TWO, LABELS, TWO_VERSIONS
from PIL import Image
from support import DIGITS_SPEC

from pipeline.datasets import load_dataset
from pipeline.preprocess import split_dataset
from pipeline.spec import load_spec


@pytest.fixture(scope="module")
def held_out_digits():
    spec = load_spec(DIGITS_SPEC)
    test = split_dataset(load_dataset(spec.dataset), spec.dataset).test
    return test.features[:20], test.targets[:20]


def digit_png(image: np.ndarray, size: int = 64, invert: bool = False) -> bytes:
    """A held-out 8x8 digit (0..16) as an upscaled 8-bit PNG, as a person might upload it."""
    pixels = (image[..., 0] * (255 / 16)).round().astype(np.uint8)
    if invert:
        pixels = 255 - pixels
    out = io.BytesIO()
    Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST).save(out, "PNG")
    return out.getvalue()


def test_models_lists_every_configured_model_with_versions_and_labels(gateway, trained_digits):
    models = {
        model["name"]: model for model in httpx.get(f"{gateway.url}/v1/models").json()["models"]
    }
    digits = models["digits-cnn"]
    assert [v["version"] for v in digits["versions"]] == [str(trained_digits.version)]
    assert digits["versions"][0]["state"] == "AVAILABLE"
    assert digits["labels"] == {}
    if TWO_VERSIONS.is_dir():
        two = models["two"]
        assert sorted(v["version"] for v in two["versions"]) == ["123", "124"]
        assert two["labels"] == {label: str(v) for label, v in LABELS.items()}
    if HALF_PLUS_TWO.is_dir():
        assert "default" in models


def test_uploaded_digits_get_labelled_top_k(gateway, held_out_digits):
    images, labels = held_out_digits
    files = [
        ("files", (f"digit-{i}.png", digit_png(image), "image/png"))
        for i, image in enumerate(images)
    ]
    response = httpx.post(
        f"{gateway.url}/v1/models/digits-cnn:classify_images",
        params={"top_k": 3},
        files=files,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_spec"]["name"] == "digits-cnn"
    results = body["results"]
    assert [result["file"] for result in results] == [f"digit-{i}.png" for i in range(len(images))]
    for result in results:
        top = result["top_k"]
        assert len(top) == 3
        assert [entry["label"] for entry in top] == [str(entry["class_id"]) for entry in top]
        probabilities = [entry["probability"] for entry in top]
        assert probabilities == sorted(probabilities, reverse=True) and probabilities[0] <= 1
    predicted = np.array([int(result["top_k"][0]["label"]) for result in results])
    assert np.mean(predicted == labels) >= 0.8  # resized round trip of 8x8 digits


def test_jpeg_and_inverted_uploads(gateway, held_out_digits):
    images, labels = held_out_digits
    light = Image.open(io.BytesIO(digit_png(images[0], invert=True)))
    jpeg = io.BytesIO()
    light.convert("RGB").save(jpeg, "JPEG", quality=95)
    response = httpx.post(
        f"{gateway.url}/v1/models/digits-cnn:classify_images",
        params={"invert": "true", "top_k": 1},
        files={"files": ("ink.jpg", jpeg.getvalue(), "image/jpeg")},
    )
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["top_k"][0]["label"] == str(labels[0])


@needs_chromium
def test_demo_page_in_headless_chromium(gateway, held_out_digits, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    images, labels = held_out_digits
    upload = tmp_path / "digit.png"
    upload.write_bytes(digit_png(images[1], size=128))
    with headless_chromium() as browser:
        browser.get(gateway.url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#model option[value='digits-cnn']"))
        browser.find_element(By.CSS_SELECTOR, "#model option[value='digits-cnn']").click()

        # A person draws a stroke: the page answers with ten bars that add up to 1.
        pad = browser.find_element(By.ID, "pad")
        ActionChains(browser).move_to_element_with_offset(
            pad, -10, -60
        ).click_and_hold().move_by_offset(0, 120).release().perform()
        browser.find_element(By.ID, "classify").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#chart .bar")) == 10)
        bars = browser.find_elements(By.CSS_SELECTOR, "#chart .bar")
        total = sum(float(bar.get_attribute("data-probability")) for bar in bars)
        assert abs(total - 1) < 1e-3
        assert browser.find_element(By.ID, "error").text == ""

        # An uploaded digit gets its label.
        browser.find_element(By.ID, "file").send_keys(str(upload))
        browser.find_element(By.ID, "classify").click()
        wait.until(
            lambda b: b.find_element(By.ID, "answer").get_attribute("data-label") == str(labels[1])
        )
        assert f"It is a {labels[1]}" in browser.find_element(By.ID, "answer").text
