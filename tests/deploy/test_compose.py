"""compose.yaml: valid against the Compose Specification's schema, and built so that
`docker compose up` on a fresh machine ends with a working predict endpoint."""

import json

import jsonschema
import pytest
import yaml
from deploy.helpers import REPO_ROOT

COMPOSE_SCHEMA = REPO_ROOT.parent / "shared" / "schemas" / "compose-spec.json"
ONE_SHOT = {"train-demo", "register-schedules"}


def test_compose_file_matches_the_compose_specification(compose):
    if not COMPOSE_SCHEMA.is_file():
        pytest.skip(f"{COMPOSE_SCHEMA} is absent: the schema comes with ../shared")
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in jsonschema.Draft7Validator(schema).iter_errors(compose)
    ]
    assert not errors, "\n".join(errors)


def test_every_long_running_service_has_a_healthcheck_and_a_restart_policy(compose):
    for name, service in compose["services"].items():
        if name in ONE_SHOT:
            assert service["restart"] == "no", name
            continue
        assert service.get("restart") in ("always", "unless-stopped"), name
        assert "test" in service.get("healthcheck", {}), f"{name} has no healthcheck"


def test_dependencies_wait_for_health_or_completion(compose):
    conditions = {"service_healthy", "service_completed_successfully"}
    for name, service in compose["services"].items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in compose["services"], f"{name} depends on unknown {dependency}"
            expected = (
                "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            )
            assert spec["condition"] in conditions and spec["condition"] == expected, (
                f"{name} -> {dependency}: {spec}"
            )


def test_predict_endpoint_comes_up_in_order(compose):
    """train-demo -> model config -> TF Serving -> gateway, each waiting for the one before."""
    services = compose["services"]
    assert "train-demo" in services["tfserving"]["depends_on"]
    assert "model-config" in services["tfserving"]["depends_on"]
    assert "train-demo" in services["model-config"]["depends_on"]
    assert "tfserving" in services["gateway"]["depends_on"]
    assert "prefect-server" in services["train-demo"]["depends_on"]
    assert "postgres" in services["prefect-server"]["depends_on"]


def test_only_the_gateway_and_prefect_ui_are_published(compose):
    published = {name: s["ports"] for name, s in compose["services"].items() if "ports" in s}
    assert published == {"gateway": ["8000:8000"], "prefect-server": ["127.0.0.1:4200:4200"]}
    # TF Serving sits on an internal network shared with the gateway and the trainers alone.
    assert compose["networks"]["serving"]["internal"] is True
    on_serving = {n for n, s in compose["services"].items() if "serving" in s.get("networks", [])}
    trainers = {
        n for n, s in compose["services"].items() if s["image"].startswith("nnserve-trainer")
    }
    assert trainers == {"train-demo", "model-config", "register-schedules", "worker", "worker-gpu"}
    assert on_serving == {"tfserving", "gateway"} | trainers


def test_named_volumes_hold_models_runs_datasets_and_the_database(compose):
    assert set(compose["volumes"]) == {"models", "runs", "datasets", "prefect-db"}
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            # a bind mount is of the repository's own files (the specs), never the host's
            assert source in compose["volumes"] or source.startswith("./"), f"{name}: {volume}"


def test_gpu_profile_gives_the_worker_the_gpus(compose):
    gpu_services = {n for n, s in compose["services"].items() if "gpu" in s.get("profiles", [])}
    assert gpu_services == {"worker-gpu"}
    worker = compose["services"]["worker-gpu"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert worker["image"].endswith("-gpu")
    assert worker["build"]["args"]["TENSORFLOW_TAG"].endswith("-gpu")
    assert worker["command"] == compose["services"]["worker"]["command"]


def test_tfserving_reads_the_generated_config_and_polls_it(compose):
    tfserving = compose["services"]["tfserving"]
    flags = dict(flag.lstrip("-").split("=", 1) for flag in tfserving["command"])
    assert flags["model_config_file"] == "/models/models.config"
    assert int(flags["model_config_file_poll_wait_seconds"]) > 0
    assert int(flags["file_system_poll_wait_seconds"]) > 0
    assert tfserving["entrypoint"] == ["tensorflow_model_server"]
    assert "models:/models:ro" in tfserving["volumes"]


def test_nnserve_and_tfserving_containers_are_locked_down(compose):
    for name, service in compose["services"].items():
        if service["image"].startswith(("nnserve-", "tensorflow/serving")):
            assert service["read_only"] is True, name
            assert service["tmpfs"] == ["/tmp"], name
            assert "no-new-privileges:true" in service["security_opt"], name
    # tensorflow/serving's image runs as root unless told otherwise.
    assert compose["services"]["tfserving"]["user"].split(":")[0] not in ("0", "root")


def test_scheduled_deployments_are_registered_on_the_workers_pool_on_first_start(compose):
    """register-schedules runs `prefect deploy --all` from prefect.yaml once the Prefect server
    answers, creating the process pool the worker serves if the worker has not yet."""
    services = compose["services"]
    register = services["register-schedules"]
    assert register["depends_on"] == {"prefect-server": {"condition": "service_healthy"}}
    script = register["command"][-1]
    worker = services["worker"]["command"]
    pool, kind = worker[worker.index("--pool") + 1], worker[worker.index("--type") + 1]
    assert f"prefect work-pool create {pool} --type {kind}" in script
    assert script.endswith("prefect --no-prompt deploy --all")
    app = "/opt/nnserve/app"
    assert f"./prefect.yaml:{app}/prefect.yaml:ro" in register["volumes"]
    assert f"./pipeline/specs:{app}/pipeline/specs:ro" in register["volumes"]
    deployments = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]
    assert {d["work_pool"]["name"] for d in deployments} == {pool}
