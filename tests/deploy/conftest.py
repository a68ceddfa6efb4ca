"""Fixtures of the deployment checks: the compose file and the overlays, each read or built once."""

from pathlib import Path

import pytest
import yaml
from deploy.helpers import COMPOSE_FILE, K8S_DIR, OVERLAYS, run, tool


@pytest.fixture(scope="session")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each overlay built by `kubectl kustomize` into a file, once per session."""
    kubectl = tool("kubectl")
    out = tmp_path_factory.mktemp("overlays")
    files = {}
    for overlay in OVERLAYS:
        result = run(kubectl, "kustomize", str(K8S_DIR / "overlays" / overlay))
        assert result.returncode == 0, f"kustomize build of {overlay} failed:\n{result.stderr}"
        files[overlay] = out / f"{overlay}.yaml"
        files[overlay].write_text(result.stdout)
    return files


@pytest.fixture(scope="session")
def objects(rendered: dict[str, Path]) -> dict[str, list[dict]]:
    """The Kubernetes objects of each overlay."""
    return {
        overlay: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        for overlay, path in rendered.items()
    }
