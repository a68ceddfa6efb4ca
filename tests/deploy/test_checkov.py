"""checkov on the Dockerfiles, the built manifests and the training job the worker creates, and its
secrets scan on every file under docker/ and k8s/. checkov has no checks of its own for compose
files beyond that scan; test_compose asserts the compose file's hardening. A skip is an annotation
beside the object that says why."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy.helpers import (
    COMPOSE_FILE,
    DOCKER_DIR,
    DOCKERFILES,
    K8S_DIR,
    REPO_ROOT,
    tool,
    training_job,
)

TIMEOUT_SECONDS = 150


def checkov(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [tool("checkov"), *args, "--output", "json", "--skip-download"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def reports(process: subprocess.Popen) -> list[dict]:
    stdout, stderr = process.communicate(timeout=TIMEOUT_SECONDS)
    assert stdout.strip(), f"checkov printed nothing; stderr:\n{stderr}"
    parsed = json.loads(stdout)
    return parsed if isinstance(parsed, list) else [parsed]


@pytest.fixture(scope="module")
def results(rendered: dict[str, Path], tmp_path_factory) -> list[dict]:
    """Every check result of both runs, which go side by side to halve the wait."""
    job_file = tmp_path_factory.mktemp("job") / "training-job.yaml"
    job_file.write_text(yaml.safe_dump(named_training_job()))
    manifests = [*DOCKERFILES, *rendered.values(), job_file]
    sources = [COMPOSE_FILE] + [
        p for d in (DOCKER_DIR, K8S_DIR) for p in sorted(d.rglob("*")) if p.is_file()
    ]
    runs = [
        checkov("--framework", "dockerfile", "kubernetes", *_files(manifests)),
        checkov("--framework", "secrets", *_files(sources)),
    ]
    found = []
    for process in runs:
        for report in reports(process):
            assert report.get("summary", report)["parsing_errors"] == 0, report
            found.append(report)
    return found


def named_training_job() -> dict:
    """A Job made by the worker is named by Kubernetes; checkov cannot index one without a name."""
    job = training_job()
    job["metadata"]["name"] = job["metadata"].pop("generateName").rstrip("-")
    return job


def _files(paths) -> list[str]:
    return [arg for path in paths for arg in ("--file", str(path))]


def test_checkov_finds_nothing(results):
    failed = [
        f"{check['check_id']} {check['check_name']}: {check['resource']} ({check['file_path']})"
        for report in results
        for check in report.get("results", {}).get("failed_checks", [])
    ]
    assert not failed, "\n".join(failed)


def test_checkov_ran_the_dockerfile_and_kubernetes_checks(results):
    passed = {r["check_type"]: r["summary"]["passed"] for r in results if "check_type" in r}
    assert passed.get("dockerfile", 0) > 0 and passed.get("kubernetes", 0) > 0, passed


def skip_annotations(objs: list[dict]) -> dict[tuple[str, str], str]:
    """(check id, "Kind.namespace.name") -> the reason written beside the skip."""
    found = {}
    for obj in objs:
        meta = obj["metadata"]
        resource = f"{obj['kind']}.{meta.get('namespace', 'default')}.{meta['name']}"
        for key, value in (meta.get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                check_id, _, reason = value.partition("=")
                found[(check_id, resource)] = reason
    return found


def test_every_skip_is_an_annotation_that_says_why(results, objects):
    annotated = skip_annotations(
        [named_training_job(), *(o for objs in objects.values() for o in objs)]
    )
    skipped = {
        (check["check_id"], check["resource"])
        for report in results
        for check in report.get("results", {}).get("skipped_checks", [])
    }
    assert skipped, "expected the annotated skips to be reported as skipped"
    assert skipped <= set(annotated), f"skipped without an annotation: {skipped - set(annotated)}"
    terse = {key: reason for key, reason in annotated.items() if len(reason.split()) < 5}
    assert not terse, f"skips need a reason of a few words: {terse}"
