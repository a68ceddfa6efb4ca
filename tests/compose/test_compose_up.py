"""`docker compose up` of the whole system on a real engine, in the order a user meets it: up,
health in the declared order, training visible in Prefect, predictions through the published
gateway, the internal network, a second model trained and served live, down and up again, and
how each container runs. The tests share one project and run in file order (`pytest -x`)."""

import io
import json
import socket
import subprocess
import tempfile
import time
from datetime import datetime
from typing import IO

import httpx
import numpy as np
import pytest
from compose.helpers import TIMINGS, Compose, ComposeError, docker, wait_for
from PIL import Image
from support import DIGITS_SPEC

from pipeline.datasets import load_dataset
from pipeline.preprocess import split_dataset
from pipeline.spec import load_spec

GATEWAY = "http://127.0.0.1:8000"
PREFECT_API = "http://127.0.0.1:4200/api"
DEMO_MODEL = "digits-cnn"
TRAIN_DEMO = "train-demo"
# A spec that trains in seconds on a dataset scikit-learn ships.
SECOND_SPEC, SECOND_MODEL = "pipeline/specs/iris-mlp.yaml", "iris-mlp"
# Bounds, not expectations: a cold start trains the demo model on two busy cores.
UP_TIMEOUT = 900
SERVED_TIMEOUT = 180
READY_TIMEOUT = 30
ONE_SHOT_TIMEOUT = 300
TRAIN_TIMEOUT = 600


def one_shots(config: dict) -> set[str]:
    """The services that run once (train-demo, register-schedules): `restart: "no"`."""
    return {name for name, spec in config["services"].items() if spec.get("restart") == "no"}


def long_running(config: dict) -> list[str]:
    return [name for name in config["services"] if name not in one_shots(config)]


def health(container: dict) -> str:
    """`healthy`, `unhealthy` or `starting` for a running container with a healthcheck, else
    Docker's status (`running`, `exited`, ...)."""
    state = container["State"]
    if state["Status"] == "running" and "Health" in state:
        return state["Health"]["Status"]
    return state["Status"]


def timestamp(text: str) -> float:
    """Docker's RFC 3339 times (nanoseconds, Z) as seconds since the epoch."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(whole + "+00:00").timestamp()
    return seconds + float(f"0.{fraction or '0'}")


class Watch:
    """Polls the project's containers while `up` runs, keeping for each service the first
    successful healthcheck seen (Docker keeps only the last five) and its start time."""

    def __init__(self, compose: Compose, one_shots: set[str]) -> None:
        self.compose = compose
        self.one_shots = one_shots
        self.healthy_at: dict[str, float] = {}
        self.started_at: dict[str, float] = {}

    def poll(self) -> dict[str, dict]:
        containers = self.compose.containers()
        for service, container in containers.items():
            state = container["State"]
            if state["StartedAt"] and not state["StartedAt"].startswith("0001"):
                self.started_at[service] = timestamp(state["StartedAt"])
            passed = [
                timestamp(entry["End"])
                for entry in state.get("Health", {}).get("Log", [])
                if entry["ExitCode"] == 0
            ]
            if passed:
                self.healthy_at[service] = min(self.healthy_at.get(service, passed[0]), *passed)
            if service in self.one_shots and state["Status"] == "exited" and not state["ExitCode"]:
                self.healthy_at[service] = timestamp(state["FinishedAt"])
        return containers


def up_until_healthy(compose: Compose, watch: Watch, services: list[str]) -> None:
    """`docker compose up --detach`, watching the containers all along (so that each first
    healthcheck is seen), until every one of `services` is healthy."""
    with tempfile.TemporaryFile("w+") as output:
        up = compose.start("up", "--detach", output=output)
        try:
            watch_until_healthy(compose, watch, services, up, output)
        finally:
            if up.poll() is None:
                up.kill()
                up.wait(10)


def watch_until_healthy(
    compose: Compose, watch: Watch, services: list[str], up: subprocess.Popen, output: IO[str]
) -> None:
    deadline = time.monotonic() + UP_TIMEOUT
    while True:
        containers = watch.poll()
        states = {s: health(containers[s]) if s in containers else "absent" for s in services}
        # Neither is waited out: Docker declares a container unhealthy only after its retries,
        # and restarts no unhealthy container.
        for service, state in states.items():
            if state in ("exited", "unhealthy"):
                code = containers[service]["State"]["ExitCode"]
                raise ComposeError(
                    f"{service} is {state} (exit code {code}); states: {states}\n"
                    f"{compose.logs(service)}"
                )
        if up.poll() is not None:
            if up.returncode != 0:
                output.seek(0)
                raise ComposeError(
                    f"docker compose up exited {up.returncode}:\n{output.read()[-4000:]}"
                    f"\nstates: {states}\n{compose.logs()}"
                )
            if all(state == "healthy" for state in states.values()):
                return
        if time.monotonic() > deadline:
            late = [s for s, state in states.items() if state != "healthy"]
            raise ComposeError(
                f"not every service healthy within {UP_TIMEOUT} s of `up`: {states}\n"
                f"{compose.logs(*late, *watch.one_shots)}"
            )
        time.sleep(1)


@pytest.fixture(scope="module")
def config(compose: Compose) -> dict:
    config = compose.config()
    # The profile `gpu` (worker-gpu) is not started: `config` without profiles leaves it out.
    assert "worker-gpu" not in config["services"]
    return config


@pytest.fixture(scope="module")
def watch(compose: Compose, config: dict) -> Watch:
    return Watch(compose, one_shots(config))


@pytest.fixture(scope="module")
def held_out_digits():
    spec = load_spec(DIGITS_SPEC)
    test = split_dataset(load_dataset(spec.dataset), spec.dataset).test
    return test.features[:10], test.targets[:10]


def digit_png(image: np.ndarray, size: int = 64) -> bytes:
    """An 8x8 digit (0..16) as an upscaled 8-bit PNG, as a person might upload it."""
    pixels = (image[..., 0] * (255 / 16)).round().astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST).save(out, "PNG")
    return out.getvalue()


def read_in_volume(compose: Compose, path_glob: str) -> str:
    """A file of the `models` volume, read through the running model-config container."""
    return compose.run("exec", "-T", "model-config", "sh", "-c", f"cat {path_glob}").stdout


def versions(compose: Compose, model: str) -> list[int]:
    listing = compose.run("exec", "-T", "model-config", "ls", f"/models/{model}").stdout.split()
    return sorted(int(name) for name in listing if name.isdigit())


def predict_example(compose: Compose, model: str) -> dict:
    (version, *_) = reversed(versions(compose, model))
    body = read_in_volume(compose, f"/models/{model}/{version}/assets.extra/example_request.json")
    response = httpx.post(
        f"{GATEWAY}/v1/models/{model}:predict",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, f"{response.text}\n{compose.logs('gateway', 'tfserving')}"
    return response.json()


def test_up_starts_every_service_healthy_in_the_declared_order(compose, config, watch):
    started = time.monotonic()
    up_until_healthy(compose, watch, long_running(config))
    TIMINGS["up until every service healthy"] = time.monotonic() - started
    # A one-shot nothing waits for (register-schedules) fails without failing `up`.
    for service in one_shots(config):
        wait_for(
            f"{service} finished",
            lambda s=service: compose.containers()[s]["State"]["Status"] == "exited",
            ONE_SHOT_TIMEOUT,
            logs=lambda s=service: compose.logs(s),
        )
        assert compose.containers()[service]["State"]["ExitCode"] == 0, compose.logs(service)
    for service, spec in config["services"].items():
        for dependency, condition in spec.get("depends_on", {}).items():
            assert dependency in watch.healthy_at, (
                f"{dependency} was never seen {condition['condition']}\n{compose.logs(dependency)}"
            )
            assert watch.started_at[service] >= watch.healthy_at[dependency], (
                f"{service} started before {dependency} was {condition['condition']}"
            )


def test_train_demo_trained_through_the_prefect_server(compose):
    container = compose.containers()[TRAIN_DEMO]
    assert container["State"]["ExitCode"] == 0, compose.logs(TRAIN_DEMO)
    assert versions(compose, DEMO_MODEL) == [1], compose.logs(TRAIN_DEMO)
    record = json.loads(
        read_in_volume(compose, f"/models/{DEMO_MODEL}/1/assets.extra/nnserve.json")
    )
    flow_run_id = record["flow_run_id"]
    response = httpx.get(f"{PREFECT_API}/flow_runs/{flow_run_id}", timeout=10)
    assert response.status_code == 200, (
        f"flow run {flow_run_id} of {DEMO_MODEL} version 1 is not on the Prefect server: "
        f"{response.text}\n{compose.logs('prefect-server', TRAIN_DEMO)}"
    )
    assert response.json()["state_type"] == "COMPLETED", response.json()


def test_gateway_is_ready_on_the_published_port(compose):
    # Healthy (alive) is not ready: readiness also needs every listed model AVAILABLE.
    answers = []

    def ready():
        answers.append(httpx.get(f"{GATEWAY}/readyz", timeout=10))
        return answers[-1].status_code == 200

    try:
        wait_for("gateway /readyz 200", ready, READY_TIMEOUT)
    except ComposeError as error:
        raise ComposeError(f"{error}: {answers[-1].text}\n{compose.logs('gateway')}") from None


def test_the_example_request_predicts(compose):
    (prediction,) = predict_example(compose, DEMO_MODEL)["predictions"]
    probabilities = prediction["probabilities"]
    assert len(probabilities) == 10 and abs(sum(probabilities) - 1) < 1e-4, prediction
    assert prediction["class_id"] == int(np.argmax(probabilities)), prediction


def test_uploaded_pngs_are_classified(compose, held_out_digits):
    images, labels = held_out_digits
    files = [
        ("files", (f"digit-{i}.png", digit_png(image), "image/png"))
        for i, image in enumerate(images)
    ]
    response = httpx.post(
        f"{GATEWAY}/v1/models/{DEMO_MODEL}:classify_images",
        params={"top_k": 1},
        files=files,
        timeout=60,
    )
    assert response.status_code == 200, f"{response.text}\n{compose.logs('gateway')}"
    predicted = np.array([int(r["top_k"][0]["label"]) for r in response.json()["results"]])
    assert np.mean(predicted == labels) >= 0.8, (predicted, labels)


def test_the_model_server_port_is_not_reachable_from_the_host(compose, config):
    container = compose.containers()["tfserving"]
    assert not any(container["NetworkSettings"]["Ports"].values()), "tfserving publishes a port"
    networks = list(container["NetworkSettings"]["Networks"])
    assert networks == ["nnserve_serving"], networks
    (serving,) = json.loads(docker("network", "inspect", "nnserve_serving").stdout)
    assert serving["Internal"], "the serving network is not internal"
    with socket.socket() as probe:
        probe.settimeout(3)
        assert probe.connect_ex(("127.0.0.1", 8500)) != 0, "127.0.0.1:8500 answers on the host"


def restarts(compose: Compose, config: dict) -> dict[str, tuple[str, int]]:
    return {
        service: (c["State"]["StartedAt"], c["RestartCount"])
        for service, c in compose.containers().items()
        if service in long_running(config)
    }


def test_a_second_model_trained_with_run_is_served_without_a_restart(compose, config):
    before = restarts(compose, config)
    started = time.monotonic()
    trained = compose.run(
        "run", "--rm", TRAIN_DEMO, "nnserve", "train", SECOND_SPEC, timeout=TRAIN_TIMEOUT
    )
    TIMINGS[f"docker compose run ... nnserve train {SECOND_SPEC}"] = time.monotonic() - started
    assert f"trained {SECOND_MODEL} version 1" in trained.stdout, trained.stdout[-3000:]
    published = time.monotonic()

    def served():
        status = httpx.get(f"{GATEWAY}/v1/models/{SECOND_MODEL}", timeout=10)
        return status.status_code == 200 and any(
            v["state"] == "AVAILABLE" for v in status.json()["model_version_status"]
        )

    wait_for(
        f"{SECOND_MODEL} AVAILABLE through the gateway",
        served,
        SERVED_TIMEOUT,
        logs=lambda: compose.logs("model-config", "tfserving", "gateway"),
    )
    TIMINGS[f"{SECOND_MODEL} published until served"] = time.monotonic() - published
    (prediction,) = predict_example(compose, SECOND_MODEL)["predictions"]
    assert 0 <= prediction["class_id"] < 3, prediction
    assert restarts(compose, config) == before, "a service was restarted"


def test_down_and_up_again_keeps_the_models_and_skips_training(compose, config, watch):
    started = time.monotonic()
    compose.run("down", timeout=180)
    TIMINGS["docker compose down"] = time.monotonic() - started
    started = time.monotonic()
    up_until_healthy(compose, watch, long_running(config))
    TIMINGS["second up until every service healthy"] = time.monotonic() - started
    skipped = compose.run("logs", "--no-color", TRAIN_DEMO).stdout
    assert f"{DEMO_MODEL} already has a version in /models" in skipped, skipped
    assert versions(compose, DEMO_MODEL) == [1]
    for model in (DEMO_MODEL, SECOND_MODEL):
        assert predict_example(compose, model)["predictions"], model
    assert httpx.get(f"{GATEWAY}/readyz", timeout=10).status_code == 200


def test_a_deployment_run_from_the_prefect_api_publishes_a_version(compose):
    """register-schedules registered the retraining deployments; a run of one, asked of the
    Prefect API, is taken by the Compose worker, and the version it publishes gets served."""
    found = httpx.post(
        f"{PREFECT_API}/deployments/filter",
        json={"deployments": {"name": {"any_": [DEMO_MODEL]}}},
        timeout=10,
    ).json()
    assert found, f"no deployment {DEMO_MODEL} on the server\n{compose.logs('register-schedules')}"
    before = versions(compose, DEMO_MODEL)
    # A short run that the gate lets through whatever it scores: what is checked is the path
    # from the API to a served version, not the model.
    parameters = {
        "spec_path": f"pipeline/specs/{DEMO_MODEL}.yaml",
        "force": True,
        "overrides": {"training": {"epochs": 2}, "gate": {"min_accuracy": 0, "max_regression": 1}},
    }
    created = httpx.post(
        f"{PREFECT_API}/deployments/{found[0]['id']}/create_flow_run",
        json={"parameters": parameters},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    flow_run = f"{PREFECT_API}/flow_runs/{created.json()['id']}"
    started = time.monotonic()

    def finished():
        state = httpx.get(flow_run, timeout=10).json()["state"]
        return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    state = wait_for(
        "the deployment's flow run finished",
        finished,
        TRAIN_TIMEOUT,
        logs=lambda: compose.logs("worker"),
    )
    TIMINGS["deployment run from the API until finished"] = time.monotonic() - started
    assert state["type"] == "COMPLETED", f"{state}\n{compose.logs('worker')}"
    (new,) = set(versions(compose, DEMO_MODEL)) - set(before)

    def serving_new():
        status = httpx.get(f"{GATEWAY}/v1/models/{DEMO_MODEL}/versions/{new}", timeout=10)
        return status.status_code == 200 and any(
            v["state"] == "AVAILABLE" for v in status.json()["model_version_status"]
        )

    wait_for(
        f"{DEMO_MODEL} version {new} AVAILABLE",
        serving_new,
        SERVED_TIMEOUT,
        logs=lambda: compose.logs("worker", "tfserving", "gateway"),
    )


def process_uid(container: dict) -> int:
    """The real uid of the container's main process, read from the host's /proc."""
    with open(f"/proc/{container['State']['Pid']}/status") as status:
        line = next(line for line in status if line.startswith("Uid:"))
    return int(line.split()[1])


def declared_uid(compose: Compose, service: str, container: dict, spec: dict) -> str | None:
    """The uid compose.yaml (`user:`) or the image (`USER`) says the service runs as, a user
    name looked up in the container's own /etc/passwd; None where neither says."""
    user = (spec.get("user") or container["Config"]["User"]).split(":")[0]
    if not user or user.isdigit():
        return user or None
    return compose.run("exec", "-T", service, "id", "-u", user).stdout.strip()


def test_each_container_runs_as_its_declared_user_on_a_read_only_root(compose, config):
    containers = compose.containers()
    checked = []
    for service in long_running(config):
        spec, container = config["services"][service], containers[service]
        uid = declared_uid(compose, service, container, spec)
        if uid:
            assert uid != "0", f"{service} declares root"
            assert str(process_uid(container)) == uid, f"{service} does not run as uid {uid}"
            checked.append(service)
        if spec.get("read_only"):
            assert container["HostConfig"]["ReadonlyRootfs"], service
            probe = compose.run(
                "exec", "-T", service, "sh", "-c", "touch /nnserve-probe", check=False
            )
            assert probe.returncode != 0 and "Read-only file system" in probe.stderr, (
                f"{service}: writing to / {probe.returncode}: {probe.stderr}"
            )
    assert {"tfserving", "gateway", "worker", "model-config"} <= set(checked), checked
