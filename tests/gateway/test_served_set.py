"""One served set: `nnserve up` serves every model of the repository (`--models` only those it
names), and `/v1/models`, `/readyz` and the demo page list exactly what the model server serves;
a model or version on disk that is not served is a 404 that says so."""

import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from gateway.browser import headless_chromium, needs_chromium
from gateway.servers import HALF_PLUS_TWO
from support import nnserve, read_until, start_up, stop, wait_until

from service import serving_config
from service.gateway.catalog import ModelCatalog
from service.model_status import ModelStatusClient

pytestmark = pytest.mark.skipif(
    not HALF_PLUS_TWO.is_dir(), reason="../shared/tfserving-testdata is absent"
)

VERSION = 123  # half_plus_two's only version


def put_model(repo: Path, name: str, version: int = VERSION) -> None:
    """A version of `name` in the repository: TF Serving's half_plus_two, linked, not copied."""
    (repo / name).mkdir(parents=True, exist_ok=True)
    (repo / name / str(version)).symlink_to(HALF_PLUS_TWO / f"{VERSION:08d}")


def alpha_spec(folder: Path) -> Path:
    """A spec of `alpha`, so that `up` trains nothing where the repository holds alpha."""
    spec = folder / "alpha.yaml"
    spec.write_text(
        "name: alpha\ndataset: {name: iris}\nmodel: {architecture: mlp}\ntraining: {epochs: 1}\n"
    )
    return spec


@dataclass
class Up:
    url: str
    grpc_address: str
    repo: Path
    config_file: Path
    process: subprocess.Popen
    # As `up` started, before any test changed the repository:
    banner: str
    listing: dict
    readiness: httpx.Response


@pytest.fixture(scope="module")
def up(tmp_path_factory) -> Up:
    """`nnserve up` on a repository holding `alpha` (the spec's model) and `beta`, no config."""
    root = tmp_path_factory.mktemp("served-set")
    repo = root / "models"
    put_model(repo, "alpha")
    put_model(repo, "beta")
    process, grpc_port, http_port = start_up(alpha_spec(root), repo, root / "runs")
    try:
        banner = read_until(process, "Press Ctrl-C to stop.", timeout=120)
        url = f"http://127.0.0.1:{http_port}"
        listing = httpx.get(f"{url}/v1/models", timeout=30).json()
        readiness = httpx.get(f"{url}/readyz", timeout=30)
        yield Up(
            url,
            f"127.0.0.1:{grpc_port}",
            repo,
            repo / "models.config",
            process,
            banner,
            listing,
            readiness,
        )
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    finally:
        stop(process, timeout=60)


@pytest.fixture(scope="module")
def gamma_on_disk(up) -> Up:
    """A model copied into the repository after `up` started, and a version of alpha published
    but not promoted: both on disk, neither in the model config."""
    put_model(up.repo, "gamma")
    put_model(up.repo, "alpha", VERSION + 1)
    return up


def names(listing: dict) -> list[str]:
    return [model["name"] for model in listing["models"]]


def test_up_serves_every_model_of_the_repository(up):
    config = serving_config.read(up.config_file)
    assert [item.name for item in config.model_config_list.config] == ["alpha", "beta"]
    assert "serving what the model config lists:" in up.banner
    assert (
        f"\n  alpha  version {VERSION} (stable)\n  beta   version {VERSION} (stable)\n" in up.banner
    )
    assert names(up.listing) == ["alpha", "beta"]
    assert all(model["labels"] == {"stable": str(VERSION)} for model in up.listing["models"])
    assert up.readiness.status_code == 200
    assert up.readiness.json()["models"] == {"alpha": "AVAILABLE", "beta": "AVAILABLE"}


def test_models_and_readiness_list_the_served_set_only(gamma_on_disk):
    listing = httpx.get(f"{gamma_on_disk.url}/v1/models", timeout=30)
    readiness = httpx.get(f"{gamma_on_disk.url}/readyz", timeout=30)
    assert names(listing.json()) == ["alpha", "beta"]
    alpha = listing.json()["models"][0]
    assert [v["version"] for v in alpha["versions"]] == [str(VERSION)]
    assert readiness.status_code == 200
    assert readiness.json()["models"] == {"alpha": "AVAILABLE", "beta": "AVAILABLE"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models/gamma"),
        ("GET", "/v1/models/gamma/metadata"),
        ("POST", "/v1/models/gamma:predict"),
        ("POST", "/v1/models/gamma/versions/123:predict"),
    ],
)
def test_a_model_on_disk_but_not_in_the_config_is_a_404_that_says_so(gamma_on_disk, method, path):
    response = httpx.request(
        method,
        gamma_on_disk.url + path,
        json={"instances": [1.0]} if method == "POST" else None,
        timeout=30,
    )
    assert response.status_code == 404
    assert response.json()["error"] == (
        "model gamma has versions on disk (123) but is not served: "
        "it is not in the model config file (NNSERVE_MODEL_CONFIG_FILE)"
    )


def test_a_version_on_disk_but_not_served_is_a_404_that_says_so(gamma_on_disk):
    for path in ("/v1/models/alpha/versions/124", "/v1/models/alpha/versions/124:predict"):
        method = "POST" if path.endswith(":predict") else "GET"
        body = {"instances": [1.0]} if method == "POST" else None
        response = httpx.request(method, gamma_on_disk.url + path, json=body, timeout=30)
        assert response.status_code == 404
        assert response.json()["error"] == (
            "version 124 of model alpha is on disk but not served: the model config file "
            "(NNSERVE_MODEL_CONFIG_FILE) serves versions 123 of it"
        )


def test_a_model_nowhere_keeps_tf_servings_404(gamma_on_disk):
    response = httpx.get(f"{gamma_on_disk.url}/v1/models/nowhere", timeout=30)
    assert response.status_code == 404
    assert response.json()["error"] == "Could not find any versions of model nowhere"


@needs_chromium
def test_the_demo_page_lists_the_served_models_only(gamma_on_disk, gateways, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # A second gateway, on the same model server, whose config also lists a model that sorts
    # first and that the model server does not serve: the page must not offer it.
    config_file = tmp_path / "models.config"
    config = serving_config.read(gamma_on_disk.config_file)
    config.model_config_list.config.add(
        name="aardvark", base_path=str(tmp_path / "aardvark"), model_platform="tensorflow"
    )
    serving_config.write(config_file, config)
    other = gateways(
        gamma_on_disk.grpc_address,
        model_config_file=str(config_file),
        model_repo=str(gamma_on_disk.repo),
    )
    assert names(httpx.get(f"{other.url}/v1/models", timeout=30).json())[0] == "aardvark"

    def offered(url: str) -> tuple[list[str], str, str]:
        browser.get(url + "/")
        WebDriverWait(browser, 30).until(
            lambda b: b.find_elements(By.CSS_SELECTOR, "#model option")
        )
        options = browser.find_elements(By.CSS_SELECTOR, "#model option")
        return (
            [option.get_attribute("value") for option in options],
            browser.find_element(By.ID, "model").get_attribute("value"),
            browser.find_element(By.ID, "error").text,
        )

    with headless_chromium() as browser:
        assert offered(gamma_on_disk.url) == (["alpha", "beta"], "alpha", "")
        assert offered(other.url) == (["alpha", "beta"], "alpha", "")


def test_up_with_models_serves_only_those_keeps_the_record_and_follows_promotions(tmp_path):
    repo = tmp_path / "models"
    put_model(repo, "alpha")
    put_model(repo, "beta", VERSION)
    put_model(repo, "beta", VERSION + 1)
    put_model(repo, "gamma")
    record = repo / "models.config"
    for version in (VERSION, VERSION + 1):
        serving_config.promote(record, "beta", version, repo / "beta", None)
    beta = serving_config.entry(serving_config.read(record), "beta")
    assert dict(beta.version_labels) == {"stable": VERSION + 1, "previous": VERSION}

    process, grpc_port, http_port = start_up(
        alpha_spec(tmp_path), repo, tmp_path / "runs", "--models", "alpha"
    )
    url, grpc_address = f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
    view = repo / f"models.config.up-{grpc_port}"
    try:
        banner = read_until(process, "Press Ctrl-C to stop.", timeout=120)
        assert view.is_file()
        # The banner, the gateway and the model server itself: alpha alone.
        assert (
            "serving the models --models chose of the model config:\n"
            f"  alpha  version {VERSION} (stable)\n  model server"
        ) in banner
        assert names(httpx.get(f"{url}/v1/models", timeout=30).json()) == ["alpha"]
        readiness = httpx.get(f"{url}/readyz", timeout=30)
        assert readiness.status_code == 200
        assert readiness.json()["models"] == {"alpha": "AVAILABLE"}
        with ModelStatusClient(grpc_address) as model_server:
            assert model_server.statuses("beta") == []
            assert [status.state for status in model_server.statuses("alpha")] == ["AVAILABLE"]
        refused = httpx.post(f"{url}/v1/models/beta:predict", json={"instances": [1.0]}, timeout=30)
        assert refused.status_code == 404
        assert refused.json()["error"] == (
            f"model beta has versions on disk ({VERSION}, {VERSION + 1}) but is not served: "
            "`nnserve up --models` serves only alpha"
        )
        # The record: alpha added; beta, which is not served, as it was; gamma, named nowhere,
        # not added.
        config = serving_config.read(record)
        assert [item.name for item in config.model_config_list.config] == ["beta", "alpha"]
        assert serving_config.entry(config, "beta") == beta
        assert serving_config.labels(config, "alpha") == {"stable": VERSION}

        # A promotion writes the record and waits for the model server: it gets there.
        put_model(repo, "alpha", VERSION + 1)
        said = registry_command(repo, grpc_address, "promote", "alpha", str(VERSION + 1))
        assert f"AVAILABLE on the model server at {grpc_address}" in said

        def stable_version() -> str | None:
            metadata = httpx.get(f"{url}/v1/models/alpha/metadata", timeout=30)
            return metadata.json().get("model_spec", {}).get("version")

        wait_until(
            lambda: stable_version() == str(VERSION + 1),
            30,
            f"the gateway answering alpha from version {VERSION + 1}",
            process,
        )
        (alpha,) = httpx.get(f"{url}/v1/models", timeout=30).json()["models"]
        assert alpha["labels"] == {"stable": str(VERSION + 1), "previous": str(VERSION)}
        assert serving_config.entry(serving_config.read(record), "beta") == beta

        # A model this up leaves out is promoted in the record at once: no model server here
        # will load it, so there is nothing to wait for.
        for command, *version in (("promote", "beta", str(VERSION)), ("rollback", "beta")):
            said = registry_command(repo, grpc_address, command, *version)
            if command == "promote":
                assert (
                    f"the model server at {grpc_address} serves only alpha (`nnserve up "
                    "--models`), not beta: written in one step"
                ) in said
                labels = {"stable": VERSION, "previous": VERSION + 1}
            else:
                labels = {"stable": VERSION + 1}
            assert serving_config.labels(serving_config.read(record), "beta") == labels
        with ModelStatusClient(grpc_address) as model_server:
            assert model_server.statuses("beta") == []
        beta = serving_config.entry(serving_config.read(record), "beta")

        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
        assert not view.exists()
        assert serving_config.entry(serving_config.read(record), "beta") == beta
    finally:
        stop(process, timeout=60)


def registry_command(repo: Path, grpc_address: str, *args: str) -> str:
    """What `nnserve promote` or `rollback` said; it must succeed, within a minute's wait for
    the model server."""
    done = nnserve(
        *args,
        env={
            "NNSERVE_MODEL_REPO": str(repo),
            "NNSERVE_TFSERVING_ADDR": grpc_address,
            "NNSERVE_PROMOTION_TIMEOUT_SECONDS": "60",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    said, _ = done.communicate(timeout=120)
    assert done.returncode == 0, said
    return said


def test_the_catalog_explains_only_what_the_config_leaves_out(tmp_path):
    repo = tmp_path / "models"
    put_model(repo, "listed")
    put_model(repo, "unlisted")
    config_file = tmp_path / "models.config"
    serving_config.add_missing_models(config_file, repo / "none", model_server=None)
    serving_config.update(
        config_file, lambda c: serving_config.stage(c, "listed", VERSION, repo / "listed")
    )
    catalog = ModelCatalog(repo, config_file)
    assert "not in the model config file" in catalog.not_served("unlisted")
    assert catalog.not_served("listed") is None  # served: a NOT_FOUND has another reason
    assert catalog.not_served("listed", VERSION) is None
    assert catalog.not_served("listed", 7) is None  # not on disk
    assert catalog.not_served("absent") is None
    assert catalog.not_served("..") is None
    # Without a config file the gateway's models are the repository's folders: no such reason.
    assert ModelCatalog(repo).not_served("unlisted") is None
