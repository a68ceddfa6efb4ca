"""The Dockerfiles: hadolint-clean, pinned, multi-stage, non-root, with a healthcheck; the gateway
image without TensorFlow."""

import re
import tomllib

import pytest
from deploy.helpers import DOCKER_DIR, DOCKERFILES, REPO_ROOT, instructions, run, tool


def stages(dockerfile) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, in order."""
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(dockerfile):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def base_images(dockerfile) -> list[str]:
    """Each stage's base image with its ARG defaults filled in."""
    defaults = dict(
        rest.split("=", 1)
        for keyword, rest in instructions(dockerfile)
        if keyword == "ARG" and "=" in rest
    )
    images = []
    for stage in stages(dockerfile):
        image = stage[0][1].split()[0]
        images.append(re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image))
    return images


def test_there_is_a_gateway_and_a_trainer_image():
    assert {path.name for path in DOCKERFILES} == {"gateway.Dockerfile", "trainer.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_hadolint_finds_nothing(dockerfile):
    result = run(tool("hadolint"), "--no-color", str(dockerfile))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_multi_stage_on_pinned_bases(dockerfile):
    images = base_images(dockerfile)
    assert len(images) >= 2, "expected a build stage and a runtime stage"
    for image in images:
        tag = image.partition(":")[2]
        assert re.fullmatch(r"\d+\.\d+\.\d+.*", tag), f"{image}: base tag must name a release"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_final_stage_runs_as_non_root_with_a_healthcheck(dockerfile):
    final = stages(dockerfile)[-1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "the final stage sets no USER"
    assert users[-1].split(":")[0] not in ("root", "0"), users[-1]
    assert any(keyword == "HEALTHCHECK" for keyword, _ in final)


def test_gateway_image_installs_the_base_package_without_tensorflow():
    installs = [
        rest
        for keyword, rest in instructions(DOCKER_DIR / "gateway.Dockerfile")
        if keyword == "RUN" and "pip install" in rest
    ]
    assert installs == ["/opt/nnserve/bin/pip install ."], installs
    # The base install is the gateway's: if it ever pulled TensorFlow in, so would the image.
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    base = pyproject["project"]["dependencies"]
    assert not [dep for dep in base if re.match(r"tensorflow", dep, re.IGNORECASE)], base


def test_trainer_image_has_the_gpu_variant_on_tensorflows_gpu_tag():
    text = (DOCKER_DIR / "trainer.Dockerfile").read_text()
    tag = re.search(r"ARG TENSORFLOW_TAG=(\S+)", text).group(1)
    assert base_images(DOCKER_DIR / "trainer.Dockerfile") == [f"tensorflow/tensorflow:{tag}"] * 2
    assert f"--build-arg TENSORFLOW_TAG={tag}-gpu" in text


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerignore_lets_through_what_the_images_copy(dockerfile):
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert "**" in lines, "the context should start from nothing"
    included = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    for keyword, rest in instructions(dockerfile):
        if keyword == "COPY" and not rest.startswith("--from"):
            *sources, _ = rest.split()
            for source in sources:
                assert any(source == path or source.startswith(path + "/") for path in included), (
                    f"{dockerfile.name} copies {source}, which .dockerignore leaves out"
                )
                assert (REPO_ROOT / source).exists(), source
