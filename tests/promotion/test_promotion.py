"""Promotion by version labels and rollback against a real `nnserve model-server` and `nnserve
gateway` serving from the model config file: where requests without a version go at each step,
and not one failed request while several clients keep calling during a promotion or a rollback."""

import os
import subprocess
import sys
import time

import grpc
import httpx
import pytest
from google.protobuf import text_format
from promotion.stack import Answer, Load, answer_of
from support import REPO_ROOT, free_port, nnserve, stop, wait_until
from tensorflow_serving.config import model_server_config_pb2

from service import serving_config
from service.model_status import AVAILABLE, ModelStatusClient, VersionStatus
from service.serving_config import PREVIOUS, STABLE, Promotion, PromotionError

OLD, NEW, CANDIDATE = answer_of(2.0), answer_of(10.0), answer_of(20.0)
TFSERVING_CONFIG_SCRIPT = REPO_ROOT / "docker" / "tfserving_config.py"


class WatchedModelServer(ModelStatusClient):
    """Notes when the model server first reports `version` AVAILABLE to the promotion: the label
    is written only after that, so until then the gateway must answer from the old version."""

    def __init__(self, address: str, version: int) -> None:
        super().__init__(address)
        self.version = version
        self.available_at: float | None = None

    def statuses(self, model: str) -> list[VersionStatus]:
        found = super().statuses(model)
        seen = any(s.version == self.version and s.state == AVAILABLE for s in found)
        if seen and self.available_at is None:
            self.available_at = time.monotonic()
        return found


def promote(stack, model: str, version: int) -> Promotion:
    with ModelStatusClient(stack.grpc_address) as model_server:
        return serving_config.promote(
            stack.config_file, model, version, stack.repo / model, model_server, 60
        )


def run_nnserve(stack, *args: str) -> subprocess.CompletedProcess:
    process = nnserve(
        *args, env=stack.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def entry_text(stack, model: str) -> str:
    item = serving_config.entry(serving_config.read(stack.config_file), model)
    return text_format.MessageToString(item) if item is not None else ""


def assert_switched(
    answers: list[Answer], first: float, then: float, first_until: float, then_from: float
) -> None:
    """One client's answers, in order: `first` for every request finished before `first_until`,
    `then` for every request started after `then_from`, nothing else, and never back."""
    assert {answer.value for answer in answers} <= {first, then}
    switched = next((i for i, answer in enumerate(answers) if answer.value == then), len(answers))
    assert all(answer.value == then for answer in answers[switched:]), "switched back"
    before = [answer for answer in answers if answer.finished < first_until]
    after = [answer for answer in answers if answer.started > then_from]
    assert before and after, "no requests on one side of the switch: the test saw nothing"
    assert all(answer.value == first for answer in before)
    assert all(answer.value == then for answer in after)


def test_labels_route_requests_through_the_gateway_and_grpc(stack):
    """`nnserve promote` against the model server, twice: the config it writes is TF Serving's,
    the model server loads it, and the labels answer through the gateway and over gRPC."""
    stack.add_model("labelled", [2.0, 10.0, 20.0])
    for version in ("1", "2"):
        result = run_nnserve(stack, "promote", "labelled", version)
        assert result.returncode == 0, result.stderr
        assert f"AVAILABLE on the model server at {stack.grpc_address}" in result.stdout
    stack.wait_for_label("labelled", STABLE, 2)

    assert stack.grpc_predict("labelled", version_label=STABLE) == (2, NEW)
    assert stack.grpc_predict("labelled", version_label=PREVIOUS) == (1, OLD)
    assert stack.http_predict("labelled/labels/stable") == NEW
    assert stack.http_predict("labelled/labels/previous") == OLD
    assert stack.http_predict("labelled") == NEW
    listing = httpx.get(f"{stack.gateway_url}/v1/models", timeout=30).json()["models"]
    (labelled,) = [model for model in listing if model["name"] == "labelled"]
    assert labelled["labels"] == {STABLE: "2", PREVIOUS: "1"}
    available = [v["version"] for v in labelled["versions"] if v["state"] == AVAILABLE]
    assert sorted(available) == ["1", "2"]
    official = text_format.Parse(
        stack.config_file.read_text(), model_server_config_pb2.ModelServerConfig()
    )
    (item,) = [item for item in official.model_config_list.config if item.name == "labelled"]
    assert list(item.model_version_policy.specific.versions) == [1, 2]
    assert dict(item.version_labels) == {STABLE: 2, PREVIOUS: 1}


def test_a_staged_version_takes_no_request_through_the_gateway(stack):
    """Between a promotion's first two steps the new version is served, and is the highest: a
    gRPC request without a version gets it, while the gateway still sends such a request to
    `stable`."""
    base = stack.add_model("staged", [2.0, 20.0])
    promote(stack, "staged", 1)
    serving_config.update(stack.config_file, lambda c: serving_config.stage(c, "staged", 2, base))
    stack.wait_for_default("staged", 2)
    assert stack.grpc_predict("staged") == (2, CANDIDATE)
    assert stack.http_predict("staged") == OLD
    assert stack.http_predict("staged/versions/2") == CANDIDATE


def test_a_promotion_under_load_fails_no_request_and_moves_the_default_route(stack):
    base = stack.add_model("promoted", [2.0, 10.0])
    promote(stack, "promoted", 1)
    stack.wait_for_label("promoted", STABLE, 1)
    with Load(stack, "promoted") as load:
        load.wait_for_answers_started_after(time.monotonic(), 5)
        asked = time.monotonic()
        with WatchedModelServer(stack.grpc_address, version=2) as watched:
            promotion = serving_config.promote(stack.config_file, "promoted", 2, base, watched, 60)
        labelled = stack.wait_for_label("promoted", STABLE, 2)
        load.wait_for_answers_started_after(labelled, 20)

    assert promotion == Promotion("promoted", 2, 1, (1, 2), confirmed_available=True)
    assert [answer for answer in load.answers if answer.error] == []
    clients = load.by_client()
    assert len(clients) == 5
    for name, answers in clients.items():
        # The gateway's clients switch when the label moves; gRPC's default is the highest
        # version served, the new one as soon as it is loaded.
        first_until = watched.available_at if name.startswith("http") else asked
        assert_switched(answers, OLD, NEW, first_until, labelled)
        assert all(answer.version in (None, 1 if answer.value == OLD else 2) for answer in answers)


def test_a_rollback_under_load_fails_no_request_and_returns_to_the_old_version(stack):
    stack.add_model("rolled", [2.0, 10.0])
    promote(stack, "rolled", 1)
    promote(stack, "rolled", 2)
    stack.wait_for_label("rolled", STABLE, 2)
    with Load(stack, "rolled") as load:
        load.wait_for_answers_started_after(time.monotonic(), 5)
        asked = time.monotonic()
        result = run_nnserve(stack, "rollback", "rolled")
        labelled = stack.wait_for_label("rolled", STABLE, 1)
        # Version 2 is no longer served: a request without a version gets version 1.
        unloaded = stack.wait_for_default("rolled", 1)
        load.wait_for_answers_started_after(unloaded, 20)

    assert result.returncode == 0, result.stderr
    assert "rolled version 1 is stable again" in result.stdout
    assert [answer for answer in load.answers if answer.error] == []
    for name, answers in load.by_client().items():
        assert_switched(answers, NEW, OLD, asked, labelled if name.startswith("http") else unloaded)
    assert serving_config.labels(serving_config.read(stack.config_file), "rolled") == {STABLE: 1}


def test_a_version_that_fails_to_load_is_not_promoted(stack):
    base = stack.add_model("broken", [2.0])
    (base / "2").mkdir()
    (base / "2" / "saved_model.pb").write_bytes(b"not a SavedModel")
    promote(stack, "broken", 1)
    before = entry_text(stack, "broken")
    with pytest.raises(PromotionError, match="version 2 of broken failed to load on the model"):
        promote(stack, "broken", 2)
    assert entry_text(stack, "broken") == before
    assert stack.http_predict("broken") == OLD


def test_a_version_the_model_server_never_sees_is_not_promoted(stack, saved_models, tmp_path):
    """The model server does not read this config file: the wait ends, and the model it would
    have added is gone from the file again."""
    config_file = tmp_path / "models.config"
    base = tmp_path / "unseen"
    base.mkdir()
    (base / "1").symlink_to(saved_models[2.0])
    with (
        ModelStatusClient(stack.grpc_address) as model_server,
        pytest.raises(PromotionError, match="was not AVAILABLE on the model server at"),
    ):
        serving_config.promote(config_file, "unseen", 1, base, model_server, 1)
    assert serving_config.entry(serving_config.read(config_file), "unseen") is None


def test_the_gateway_answers_while_the_model_server_has_not_read_the_label_yet(stack, tmp_path):
    """A gateway whose config gives the model a `stable` label the model server does not know
    (as between a first labelling and the model server's next read): the request without a
    version goes to the model server's default; one that names the label is refused."""
    base = stack.add_model("fresh", [2.0, 10.0])
    for version in (1, 2):
        serving_config.update(
            stack.config_file, lambda c, v=version: serving_config.stage(c, "fresh", v, base)
        )
    stack.wait_for_default("fresh", 2)
    ahead = tmp_path / "models.config"
    serving_config.write(
        ahead,
        serving_config.label_stable(serving_config.read(stack.config_file), "fresh", 1),
    )
    port = free_port()
    gateway = nnserve(
        "gateway",
        "--port",
        str(port),
        env={
            "NNSERVE_TFSERVING_ADDR": stack.grpc_address,
            "NNSERVE_MODEL_CONFIG_FILE": str(ahead),
        },
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1/models/fresh"
    try:
        wait_until(lambda: _answers(url), 60, "the second gateway", gateway)
        default = httpx.post(f"{url}:predict", json={"instances": [[1.0]]}, timeout=30)
        assert default.status_code == 200, default.text
        assert default.json() == {"predictions": [[NEW]]}
        named = httpx.post(f"{url}/labels/stable:predict", json={"instances": [[1.0]]})
        assert named.status_code == 400
        assert named.json() == {"error": "Unrecognized servable version label: stable"}
    finally:
        stop(gateway)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_tfserving_config_adds_a_new_model_once_the_model_server_has_it(stack):
    """docker/tfserving_config.py with a model server: the new model is staged, labelled stable
    once AVAILABLE; the models already listed are left exactly as they were."""
    stack.add_model("listed", [10.0])
    promote(stack, "listed", 1)
    before = serving_config.read(stack.config_file)
    stack.add_model("watched", [2.0])
    result = subprocess.run(
        [
            sys.executable,
            str(TFSERVING_CONFIG_SCRIPT),
            "--repo",
            str(stack.repo),
            "--model-server",
            stack.grpc_address,
        ],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "serving watched version 1 (stable)" in result.stdout
    after = serving_config.read(stack.config_file)
    assert serving_config.labels(after, "watched") == {STABLE: 1}
    assert serving_config.served_versions(after, "watched", [1]) == {1}
    for item in before.model_config_list.config:
        assert serving_config.entry(after, item.name) == item, item.name
    stack.wait_for_label("watched", STABLE, 1)
    assert stack.http_predict("watched") == OLD
    with pytest.raises(grpc.RpcError):
        stack.grpc_predict("watched", version_label=PREVIOUS)
