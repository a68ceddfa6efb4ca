"""k8s/: each overlay builds, every object is valid against the Kubernetes API schemas, and the
objects the issue asks for are there, locked down."""

import json

import kubernetes_validate
import pytest
from deploy.helpers import JOB_TEMPLATE, NAMESPACE, OVERLAYS, find, pod_spec, training_job

# The oldest Kubernetes with gRPC probes as GA, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.27", kubernetes_validate.latest_version())
KUBERNETES_VERSION = KUBERNETES_VERSIONS[-1]
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_against_the_api_schemas(objects, overlay, version):
    errors = []
    for obj in objects[overlay]:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {error.message}")
    assert not errors, "\n".join(errors)


def test_training_job_template_gives_a_valid_job():
    job = training_job()
    pod = job["spec"]["template"]["spec"]
    # Prefect's Kubernetes worker refuses a template without these two keys in the pod spec, where
    # Kubernetes has no such fields: the API server drops them with a warning. The rest must be
    # exactly valid.
    assert (pod.pop("parallelism"), pod.pop("completions")) == (1, 1)
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_namespaced_object_is_in_the_nnserve_namespace(objects, overlay):
    for obj in objects[overlay]:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]


def workloads(objects: list[dict]) -> list[tuple[str, dict]]:
    named = [(f"{o['kind']}/{o['metadata']['name']}", pod_spec(o)) for o in objects]
    return [(name, pod) for name, pod in named if pod is not None]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_non_root_read_only_and_bounded(objects, overlay):
    training_pod = ("training job", training_job()["spec"]["template"]["spec"])
    pods = [*workloads(objects[overlay]), training_pod]
    for name, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        for container in pod["containers"] + pod.get("initContainers", []):
            where = f"{name} container {container['name']}"
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{where} {bound}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_long_running_pods_have_readiness_and_liveness_probes(objects, overlay):
    for name, pod in workloads(objects[overlay]):
        if name.startswith("Job/"):
            continue
        for container in pod["containers"]:
            assert "readinessProbe" in container and "livenessProbe" in container, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_issue_lists_these_objects(objects, overlay):
    objs = objects[overlay]
    claim = find(objs, "PersistentVolumeClaim", "models")
    expected_mode = "ReadWriteOnce" if overlay == "dev" else "ReadWriteMany"
    assert claim["spec"]["accessModes"] == [expected_mode]
    assert find(objs, "Service", "tfserving")["spec"]["type"] == "ClusterIP"
    for kind in (
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Ingress",
    ):
        find(objs, kind, "gateway")
    find(objs, "Deployment", "prefect-server")
    find(objs, "Deployment", "prefect-worker")
    find(objs, "Job", "train-demo")
    find(objs, "Job", "register-schedules")
    has_postgres = any(
        o["kind"] == "StatefulSet" and o["metadata"]["name"] == "postgres" for o in objs
    )
    # prod takes an external database through the Secret prefect-database.
    assert has_postgres == (overlay == "dev")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_and_training_pods_reach_tfserving(objects, overlay):
    tfserving_labels = find(objects[overlay], "Deployment", "tfserving")["spec"]["template"][
        "metadata"
    ]["labels"]
    policies = [
        o
        for o in objects[overlay]
        if o["kind"] == "NetworkPolicy"
        and all(
            tfserving_labels.get(k) == v
            for k, v in o["spec"]["podSelector"].get("matchLabels", {}).items()
        )
    ]
    assert len(policies) == 1, [p["metadata"]["name"] for p in policies]
    (rule,) = policies[0]["spec"]["ingress"]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}},
        {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "training"}}},
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8500}]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_uses_a_kubernetes_pool_with_the_gpu_job_template(objects, overlay):
    worker = find(objects[overlay], "Deployment", "prefect-worker")["spec"]["template"]["spec"]
    command = worker["containers"][0]["command"]
    assert command[command.index("--type") + 1] == "kubernetes"
    template_path = command[command.index("--base-job-template") + 1]
    mount = next(
        m
        for m in worker["containers"][0]["volumeMounts"]
        if template_path.startswith(m["mountPath"] + "/")
    )
    volume = next(v for v in worker["volumes"] if v["name"] == mount["name"])
    config_map = find(objects[overlay], "ConfigMap", volume["configMap"]["name"])
    assert json.loads(config_map["data"][JOB_TEMPLATE.name]) == json.loads(JOB_TEMPLATE.read_text())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_register_schedules_deploys_onto_the_workers_gpu_pool(objects, overlay):
    """The Job runs `prefect deploy --all` from the image's prefect.yaml; if the pool does not
    exist yet, it creates it exactly as the worker would: Kubernetes, the same job template."""
    objs = objects[overlay]
    worker = find(objs, "Deployment", "prefect-worker")["spec"]["template"]["spec"]
    worker_command = worker["containers"][0]["command"]
    job = find(objs, "Job", "register-schedules")["spec"]["template"]
    (container,) = job["spec"]["containers"]
    script = container["command"][-1]
    pool = worker_command[worker_command.index("--pool") + 1]
    template = worker_command[worker_command.index("--base-job-template") + 1]
    assert f"prefect work-pool create {pool} --type kubernetes --base-job-template {template}" in (
        script
    )
    assert script.endswith("prefect --no-prompt deploy --all")
    mounted = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in job["spec"]["volumes"]}
    worker_volumes = {v["name"]: v for v in worker["volumes"]}
    template_volume = volumes[mounted["/etc/prefect"]]
    assert template_volume["configMap"] == worker_volumes["job-template"]["configMap"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    # The Prefect server's NetworkPolicy lets it in.
    (rule,) = find(objs, "NetworkPolicy", "prefect-server")["spec"]["ingress"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "register-schedules"}}} in (
        rule["from"]
    )
