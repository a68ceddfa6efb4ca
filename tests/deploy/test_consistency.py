"""Compose, manifests, Dockerfiles and code agree: ports, environment variable names, image names
and tags, volume paths and model names."""

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from deploy.helpers import (
    DOCKER_DIR,
    DOCKERFILES,
    JOB_TEMPLATE,
    REPO_ROOT,
    TFSERVING_CONFIG_SCRIPT,
    find,
    instructions,
    pod_spec,
    training_job,
)
from packaging.requirements import Requirement

from service.cli import _parser
from service.model_repository import CONFIG_FILE_NAME
from service.model_server.channel_arguments import (
    DEFAULT_CHANNEL_ARGUMENTS,
    parse_channel_arguments,
)
from service.model_server.supervisor import SERVING_ENVIRONMENT_DEFAULTS
from service.settings import Settings

GRPC_PORT, GATEWAY_PORT, PREFECT_PORT = 8500, 8000, 4200
MODEL_REPO, RUNS_DIR, DATA_DIR = "/models", "/runs", "/datasets"
DEMO_SPEC = "pipeline/specs/digits-cnn.yaml"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def containers(objs: list[dict]) -> list[tuple[dict, dict]]:
    """(pod spec, container) for every container of every workload, the training job's included."""
    pods = [pod_spec(o) for o in objs]
    pods = [pod for pod in pods if pod] + [training_job()["spec"]["template"]["spec"]]
    return [(pod, c) for pod in pods for c in pod["containers"] + pod.get("initContainers", [])]


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def dockerfile_env(dockerfile: Path) -> dict[str, str]:
    env = {}
    for keyword, rest in instructions(dockerfile):
        if keyword == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", rest))
    return env


def flags(args: list[str]) -> dict[str, str]:
    return dict(arg.lstrip("-").split("=", 1) for arg in args if "=" in arg)


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def cli_default(command: str, dest: str):
    subparsers = next(a for a in _parser()._actions if a.dest == "command")
    parser = subparsers.choices[command]
    return next(a.default for a in parser._actions if a.dest == dest)


def dev(objects) -> list[dict]:
    return objects["dev"]


# Ports


def test_grpc_port(compose, objects):
    assert Settings().tfserving_addr.rsplit(":", 1)[1] == str(GRPC_PORT)
    assert cli_default("model-server", "port") == GRPC_PORT
    assert flags(compose["services"]["tfserving"]["command"])["port"] == str(GRPC_PORT)
    tfserving = find(dev(objects), "Deployment", "tfserving")["spec"]["template"]["spec"]
    assert flags(tfserving["containers"][0]["args"])["port"] == str(GRPC_PORT)
    assert tfserving["containers"][0]["ports"][0]["containerPort"] == GRPC_PORT
    service = find(dev(objects), "Service", "tfserving")
    assert service["spec"]["ports"][0]["port"] == GRPC_PORT
    # The gateway is pointed at the TF Serving service by its name and that port.
    addresses = {
        "compose": compose["services"]["gateway"]["environment"]["NNSERVE_TFSERVING_ADDR"],
        "k8s": env_of(
            find(dev(objects), "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
        )["NNSERVE_TFSERVING_ADDR"],
        "image": dockerfile_env(DOCKER_DIR / "gateway.Dockerfile")["NNSERVE_TFSERVING_ADDR"],
    }
    assert set(addresses.values()) == {f"tfserving:{GRPC_PORT}"}, addresses
    assert "tfserving" in compose["services"]


def test_tf_serving_gets_the_settings_nnserve_model_server_defaults_to(compose, objects):
    """The same message limit, keepalive policy and kernels whichever model server the gateway
    calls."""
    container = find(dev(objects), "Deployment", "tfserving")["spec"]["template"]["spec"][
        "containers"
    ][0]
    service = compose["services"]["tfserving"]
    for args in (service["command"], container["args"]):
        given = parse_channel_arguments(flags(args)["grpc_channel_arguments"])
        assert dict(given) == dict(DEFAULT_CHANNEL_ARGUMENTS)
    for environment in (service["environment"], env_of(container)):
        assert SERVING_ENVIRONMENT_DEFAULTS.items() <= environment.items()


def test_gateway_port(compose, objects):
    assert cli_default("up", "http_port") == GATEWAY_PORT
    dockerfile = instructions(DOCKER_DIR / "gateway.Dockerfile")
    assert ("EXPOSE", str(GATEWAY_PORT)) in dockerfile
    (cmd,) = [json.loads(rest) for keyword, rest in dockerfile if keyword == "CMD"]
    assert option(cmd, "--port") == str(GATEWAY_PORT)
    (healthcheck,) = [rest for keyword, rest in dockerfile if keyword == "HEALTHCHECK"]
    assert f"127.0.0.1:{GATEWAY_PORT}/healthz" in healthcheck
    gateway = compose["services"]["gateway"]
    assert option(gateway["command"], "--port") == str(GATEWAY_PORT)
    assert gateway["ports"] == [f"{GATEWAY_PORT}:{GATEWAY_PORT}"]
    assert f"127.0.0.1:{GATEWAY_PORT}/healthz" in " ".join(gateway["healthcheck"]["test"])
    container = find(dev(objects), "Deployment", "gateway")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert option(container["args"], "--port") == str(GATEWAY_PORT)
    assert container["ports"][0]["containerPort"] == GATEWAY_PORT
    assert find(dev(objects), "Service", "gateway")["spec"]["ports"][0]["port"] == GATEWAY_PORT


def test_prefect_port(compose, objects):
    api_url = f"http://prefect-server:{PREFECT_PORT}/api"
    server = compose["services"]["prefect-server"]
    assert option(server["command"], "--port") == str(PREFECT_PORT)
    for name, service in compose["services"].items():
        if "PREFECT_API_URL" in service.get("environment", {}):
            assert service["environment"]["PREFECT_API_URL"] == api_url, name
    assert find(dev(objects), "Service", "prefect-server")["spec"]["ports"][0]["port"] == (
        PREFECT_PORT
    )
    urls = {
        env_of(c)["PREFECT_API_URL"]
        for _, c in containers(dev(objects))
        if "PREFECT_API_URL" in env_of(c)
    }
    assert urls == {api_url}


# Environment variable names


def test_every_nnserve_variable_is_a_setting(compose, objects):
    known = {f"NNSERVE_{name.upper()}" for name in Settings.model_fields}
    used: dict[str, set[str]] = {}
    for name, service in compose["services"].items():
        for variable in service.get("environment", {}):
            used.setdefault(variable, set()).add(f"compose {name}")
    for overlay, objs in objects.items():
        for _, container in containers(objs):
            for variable in env_of(container):
                used.setdefault(variable, set()).add(f"{overlay} {container['name']}")
    for dockerfile in DOCKERFILES:
        for variable in dockerfile_env(dockerfile):
            used.setdefault(variable, set()).add(dockerfile.name)
    unknown = {v: where for v, where in used.items() if v.startswith("NNSERVE_") and v not in known}
    assert not unknown, f"not fields of service.settings.Settings: {unknown}"
    assert {"NNSERVE_MODEL_REPO", "NNSERVE_TFSERVING_ADDR"} <= set(used)


# Images


def image_tags(compose, objects) -> tuple[set[str], set[str]]:
    in_compose = {s["image"] for s in compose["services"].values()}
    in_k8s = {c["image"] for _, c in containers(dev(objects))}
    return in_compose, in_k8s


def test_compose_and_manifests_run_the_same_images(compose, objects):
    in_compose, in_k8s = image_tags(compose, objects)
    assert in_compose == in_k8s


def test_project_images_carry_the_package_version(compose, objects):
    version = PYPROJECT["project"]["version"]
    in_compose, _ = image_tags(compose, objects)
    ours = {image for image in in_compose if image.startswith("nnserve-")}
    assert ours == {
        f"nnserve-gateway:{version}",
        f"nnserve-trainer:{version}",
        f"nnserve-trainer:{version}-gpu",
    }
    prod_images = {c["image"] for _, c in containers(objects["prod"])}
    assert {i.rsplit("/", 1)[-1] for i in prod_images if "/nnserve/" in i} == {
        f"nnserve-gateway:{version}",
        f"nnserve-trainer:{version}",
    }


def pinned(requirement_name: str, extra: str | None = None) -> Requirement:
    deps = (
        PYPROJECT["project"]["optional-dependencies"][extra]
        if extra
        else PYPROJECT["project"]["dependencies"]
    )
    return next(Requirement(d) for d in deps if Requirement(d).name == requirement_name)


def test_base_images_satisfy_the_package_requirements(compose):
    trainer = (DOCKER_DIR / "trainer.Dockerfile").read_text()
    tensorflow = re.search(r"ARG TENSORFLOW_TAG=(\d+\.\d+\.\d+)", trainer).group(1)
    # The image's own TensorFlow must satisfy the pipeline, or pip would fetch a second one.
    assert pinned("tensorflow", "pipeline").specifier.contains(tensorflow)
    gateway = (DOCKER_DIR / "gateway.Dockerfile").read_text()
    python = re.search(r"ARG PYTHON_TAG=(\d+\.\d+\.\d+)", gateway).group(1)
    assert Requirement(f"python{PYPROJECT['project']['requires-python']}").specifier.contains(
        python
    )
    prefect_image = compose["services"]["prefect-server"]["image"]
    prefect_version, python_suffix = prefect_image.split(":")[1].split("-python")
    assert pinned("prefect", "pipeline").specifier.contains(prefect_version)
    assert python.startswith(python_suffix + ".")


# Volume paths and model names


def test_model_repository_path(compose, objects):
    assert dockerfile_env(DOCKER_DIR / "trainer.Dockerfile")["NNSERVE_MODEL_REPO"] == MODEL_REPO
    assert dockerfile_env(DOCKER_DIR / "trainer.Dockerfile")["NNSERVE_RUNS_DIR"] == RUNS_DIR
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}
        if "NNSERVE_MODEL_REPO" in env:
            assert env["NNSERVE_MODEL_REPO"] == MODEL_REPO and mounts[MODEL_REPO] == "models", name
        if "NNSERVE_RUNS_DIR" in env:
            assert env["NNSERVE_RUNS_DIR"] == RUNS_DIR and mounts[RUNS_DIR] == "runs", name
    for overlay, objs in objects.items():
        for pod, container in containers(objs):
            claims = {
                v["name"]: v["persistentVolumeClaim"]["claimName"]
                for v in pod.get("volumes", [])
                if "persistentVolumeClaim" in v
            }
            mounted = {
                m["mountPath"]: claims.get(m["name"]) for m in container.get("volumeMounts", [])
            }
            env = env_of(container)
            if "NNSERVE_MODEL_REPO" in env or mounted.get(MODEL_REPO):
                assert mounted.get(MODEL_REPO) == "models", f"{overlay} {container['name']}"
            if "NNSERVE_RUNS_DIR" in env:
                assert mounted.get(RUNS_DIR) == "runs", f"{overlay} {container['name']}"


def test_downloaded_datasets_go_to_a_writable_volume(compose, objects):
    """The root filesystems are read-only, so wherever training runs, NNSERVE_DATA_DIR is a
    volume: a named one in compose, kept across runs; an emptyDir per Kubernetes training pod."""
    assert dockerfile_env(DOCKER_DIR / "trainer.Dockerfile")["NNSERVE_DATA_DIR"] == DATA_DIR
    for name, service in compose["services"].items():
        if service["image"].startswith("nnserve-trainer"):
            mounts = {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}
            assert service["environment"].get("NNSERVE_DATA_DIR") == DATA_DIR, name
            assert mounts.get(DATA_DIR) == "datasets", name
    for overlay, objs in objects.items():
        training = set()
        for pod, container in containers(objs):
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            if RUNS_DIR not in mounts:
                continue
            where = f"{overlay} {container['name']}"
            training.add(container["name"])
            # Where the manifest does not set it, the trainer image's value holds.
            assert env_of(container).get("NNSERVE_DATA_DIR", DATA_DIR) == DATA_DIR, where
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert "emptyDir" in volumes.get(mounts.get(DATA_DIR), {}), f"{where}: {mounts}"
        assert training == {"train", "prefect-job"}, overlay


def test_gateway_reads_the_config_tfserving_serves_from_the_model_repository(compose, objects):
    """One record of what is served: TF Serving and the gateway read the model config on the
    models volume, where promotions and rollbacks write it."""
    record = f"{MODEL_REPO}/{CONFIG_FILE_NAME}"
    services = compose["services"]
    assert flags(services["tfserving"]["command"])["model_config_file"] == record
    assert services["gateway"]["environment"]["NNSERVE_MODEL_CONFIG_FILE"] == record
    for overlay, objs in objects.items():
        tfserving = find(objs, "Deployment", "tfserving")["spec"]["template"]["spec"]
        gateway = find(objs, "Deployment", "gateway")["spec"]["template"]["spec"]
        assert flags(tfserving["containers"][0]["args"])["model_config_file"] == record, overlay
        assert env_of(gateway["containers"][0])["NNSERVE_MODEL_CONFIG_FILE"] == record, overlay
        for pod in (tfserving, gateway):
            mount = next(
                m
                for m in pod["containers"][0]["volumeMounts"]
                if record.startswith(m["mountPath"] + "/")
            )
            volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
            assert volume["persistentVolumeClaim"]["claimName"] == "models", overlay
        # TF Serving exits when its config file is missing: its pod waits for train-demo's.
        (wait,) = tfserving["initContainers"]
        assert f"[ -s {record} ]" in " ".join(wait["command"]), overlay


def test_tf_serving_starts_from_a_config_with_version_labels(compose, objects):
    """TF Serving checks a config's labels before it loads anything, so it refuses the record
    (every model has a `stable` label) at start-up unless allowed."""
    tfserving = find(dev(objects), "Deployment", "tfserving")["spec"]["template"]["spec"]
    for args in (compose["services"]["tfserving"]["command"], tfserving["containers"][0]["args"]):
        assert flags(args)["allow_version_labels_for_unavailable_models"] == "true"


def test_the_demo_model_is_trained_and_then_listed_in_the_config(compose, objects):
    spec = yaml.safe_load((REPO_ROOT / DEMO_SPEC).read_text())
    name = spec["name"]
    writer = f"python3 {TFSERVING_CONFIG_SCRIPT.name} --repo {MODEL_REPO}"
    scripts = {
        f"{overlay} train-demo": " ".join(
            find(objs, "Job", "train-demo")["spec"]["template"]["spec"]["containers"][0]["command"]
        )
        for overlay, objs in objects.items()
    }
    scripts["compose train-demo"] = " ".join(compose["services"]["train-demo"]["command"])
    for where, script in scripts.items():
        assert DEMO_SPEC in script and f"{MODEL_REPO}/{name}/" in script, where
        assert script.index(DEMO_SPEC) < script.index(writer), where


def test_trainers_reach_the_model_server_they_promote_on(compose, objects):
    """A promotion asks TF Serving whether the new version is loaded: every container that
    trains can reach its gRPC port, at the address the gateway uses."""
    address = compose["services"]["gateway"]["environment"]["NNSERVE_TFSERVING_ADDR"]
    assert dockerfile_env(DOCKER_DIR / "trainer.Dockerfile")["NNSERVE_TFSERVING_ADDR"] == address
    for name, service in compose["services"].items():
        if service["image"].startswith("nnserve-trainer"):
            assert service["environment"]["NNSERVE_TFSERVING_ADDR"] == address, name
            assert "serving" in service["networks"], name
    for overlay, objs in objects.items():
        train_demo = find(objs, "Job", "train-demo")["spec"]["template"]
        assert env_of(train_demo["spec"]["containers"][0])["NNSERVE_TFSERVING_ADDR"] == address
        (rule,) = find(objs, "NetworkPolicy", "tfserving")["spec"]["ingress"]
        selectors = [peer["podSelector"]["matchLabels"] for peer in rule["from"]]
        for labels in (train_demo["metadata"]["labels"], training_job_labels()):
            assert any(
                all(labels.get(k) == v for k, v in selector.items()) for selector in selectors
            ), f"{overlay}: pods labelled {labels} cannot reach tfserving"


def training_job_labels() -> dict[str, str]:
    return training_job()["spec"]["template"]["metadata"]["labels"]


def test_specs_sit_where_the_training_commands_look(compose):
    trainer = instructions(DOCKER_DIR / "trainer.Dockerfile")
    # The runtime stage's WORKDIR is the last one.
    workdir = [rest for keyword, rest in trainer if keyword == "WORKDIR"][-1]
    specs_dir = f"{workdir}/{Path(DEMO_SPEC).parent}"
    assert ("COPY", f"pipeline/specs ./{Path(DEMO_SPEC).parent}") in trainer
    for name in ("train-demo", "worker", "worker-gpu"):
        mounts = compose["services"][name]["volumes"]
        assert f"./pipeline/specs:{specs_dir}:ro" in mounts, name


@pytest.mark.parametrize("variable", ["namespace", "image"])
def test_training_job_template_defaults_match_the_manifests(objects, variable):
    defaults = json.loads(JOB_TEMPLATE.read_text())["variables"]["properties"]
    worker = find(dev(objects), "Deployment", "prefect-worker")
    if variable == "namespace":
        assert defaults["namespace"]["default"] == worker["metadata"]["namespace"]
    else:
        assert (
            defaults["image"]["default"]
            == worker["spec"]["template"]["spec"]["containers"][0]["image"] + "-gpu"
        )


def test_nnserve_model_server_takes_every_flag_given_to_tf_serving(compose, objects):
    """The Compose stand-in for tensorflow/serving runs `nnserve model-server` with compose.yaml's
    flags as they are, so it must take each of them (and the manifests' too)."""
    tfserving = find(dev(objects), "Deployment", "tfserving")["spec"]["template"]["spec"]
    for args in (compose["services"]["tfserving"]["command"], tfserving["containers"][0]["args"]):
        parsed = _parser().parse_args(["model-server", *args])
        for name, value in flags(args).items():
            taken = getattr(parsed, name)
            assert (str(taken) if isinstance(taken, Path) else taken) == yaml.safe_load(value), name
