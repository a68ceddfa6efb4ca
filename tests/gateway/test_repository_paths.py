"""The gateway reads nothing from the model repository for a model the model server does not
know, builds no path from a name that is not one plain folder name, and shows clients no path."""

import json

import httpx
import pytest
from gateway.image_files import jpeg
from gateway.servers import HALF_PLUS_TWO

from service.gateway.catalog import CatalogError, ModelCatalog


def classify_images(url: str, path: str) -> httpx.Response:
    files = {"files": ("a.jpg", jpeg(), "image/jpeg")}
    return httpx.post(f"{url}{path}:classify_images", files=files, timeout=30)


def test_a_name_outside_the_repository_reads_nothing(model_server, gateways, tmp_path):
    # A sibling folder `1` of the repository holds an unreadable nnserve.json: reading it would
    # show in the answer.
    (tmp_path / "repo").mkdir()
    metadata = tmp_path / "1" / "assets.extra" / "nnserve.json"
    metadata.parent.mkdir(parents=True)
    metadata.write_text("{ not json")
    gateway = gateways(model_server.address, model_repo=str(tmp_path / "repo"))
    response = classify_images(gateway.url, "/v1/models/%2e%2e/versions/1")
    assert response.status_code == 404, response.text
    message = response.json()["error"]
    assert "cannot read" not in message and "nnserve.json" not in message
    assert str(tmp_path) not in message


@pytest.mark.skipif(not HALF_PLUS_TWO.is_dir(), reason="../shared/tfserving-testdata is absent")
def test_a_version_without_nnserve_json_is_404_without_its_path(gateway):
    response = classify_images(gateway.url, "/v1/models/default")
    assert response.status_code == 404
    message = response.json()["error"]
    assert "version 123 of model default has no assets.extra/nnserve.json" in message
    assert str(HALF_PLUS_TWO) not in message and "/" + HALF_PLUS_TWO.parts[1] not in message


def test_an_unreadable_model_config_file_is_reported_without_its_path(model_server, gateways):
    missing = "/nonexistent-nnserve/models.config"
    gateway = gateways(model_server.address, model_config_file=missing)
    listing = httpx.get(f"{gateway.url}/v1/models", timeout=30)
    ready = httpx.get(f"{gateway.url}/readyz", timeout=30)
    assert listing.status_code >= 400 and ready.status_code == 503
    for text in (listing.json()["error"], json.dumps(ready.json())):
        assert "model config file" in text
        assert "nonexistent-nnserve" not in text


@pytest.mark.parametrize("name", ["..", ".", "", "a/../..", "..\\1"])
def test_the_catalog_builds_no_path_from_a_name_that_is_not_a_folder_name(tmp_path, name):
    (tmp_path / "repo").mkdir()
    for planted in (tmp_path / "1", tmp_path / "repo" / "1"):
        (planted / "assets.extra").mkdir(parents=True)
        (planted / "assets.extra" / "nnserve.json").write_text('{"planted": true}')
    catalog = ModelCatalog(tmp_path / "repo")
    with pytest.raises(CatalogError, match="not a folder name"):
        catalog.version_metadata(name, 1)


def test_a_model_config_file_that_is_not_text_is_reported_as_unreadable(tmp_path):
    config_file = tmp_path / "models.config"
    config_file.write_bytes(b"model_config_list {\xff\xfe}\n")
    catalog = ModelCatalog(tmp_path / "repo", config_file)
    with pytest.raises(CatalogError, match="cannot read the model config file"):
        catalog.models()
    assert catalog.default_label("m") is None  # predictions go on as the last read said
