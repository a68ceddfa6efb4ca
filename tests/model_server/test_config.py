"""--model_config_file: several models, version policies, labels, reload by RPC and by polling."""

import shutil

import grpc
import numpy as np
import pytest
import tensorflow as tf
from support import SHARED_TESTDATA, refused_start, wait_until
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from service.model_server.config import ConfigError, read_config_file
from service.model_server.errors import ServingError
from service.model_server.manager import ModelConfig, ModelManager, VersionPolicy


@pytest.fixture
def three_versions(tmp_path, half_plus_two):
    """half_plus_two at versions 1, 2 and 3."""
    base = tmp_path / "hp2"
    for version in ("1", "2", "3"):
        shutil.copytree(half_plus_two / "00000123", base / version)
    return base


def config_text(*models: str) -> str:
    return "model_config_list {\n" + "".join(f"  config {{ {m} }}\n" for m in models) + "}\n"


def available(manager: ModelManager, name: str) -> list[int]:
    return sorted(s.version for s in manager.statuses(name) if s.state.value == "AVAILABLE")


@pytest.mark.parametrize(
    ("policy", "served"),
    [
        ("", [3]),
        ("model_version_policy { latest { num_versions: 2 } }", [2, 3]),
        ("model_version_policy { all {} }", [1, 2, 3]),
        ("model_version_policy { specific { versions: 1 versions: 3 versions: 9 } }", [1, 3]),
    ],
    ids=["default-latest-1", "latest-2", "all", "specific"],
)
def test_version_policies_serve_the_versions_they_name(tmp_path, three_versions, policy, served):
    path = tmp_path / "models.config"
    path.write_text(
        config_text(
            f'name: "m" base_path: "{three_versions}" model_platform: "tensorflow" {policy}'
        )
    )
    manager = ModelManager(read_config_file(path))
    assert available(manager, "m") == served


def predict_version(channel, **model_spec) -> int:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    for key, value in model_spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((1, 1), np.float32)))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return stub.Predict(request).model_spec.version.value


def test_labels_route_requests_to_their_versions(serve, three_versions):
    config = ModelConfig(
        "m", three_versions, VersionPolicy("all"), labels=(("canary", 3), ("stable", 2))
    )
    # As TF Serving, a server starts from a config with labels only with the flag.
    manager = ModelManager([config], allow_labels_for_unavailable_models=True)
    with serve(manager) as channel:
        assert predict_version(channel, version_label="stable") == 2
        assert predict_version(channel, version_label="canary") == 3
        assert predict_version(channel) == 3
        assert predict_version(channel, version=1) == 1
        with pytest.raises(grpc.RpcError) as caught:
            predict_version(channel, version_label="beta")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "Unrecognized servable version label: beta"


def test_a_label_on_an_unavailable_version_is_refused_unless_allowed(three_versions):
    config = ModelConfig("m", three_versions, labels=(("stable", 2),))  # latest 1 serves only 3
    with pytest.raises(ServingError, match="assign label to version 2 of model m, which is not"):
        ModelManager([config])
    ModelManager([config], allow_labels_for_unavailable_models=True)


def specific(base, versions: set[int], **labels: int) -> ModelConfig:
    policy = VersionPolicy("specific", versions=frozenset(versions))
    return ModelConfig("m", base, policy, labels=tuple(sorted(labels.items())))


def labelled(manager: ModelManager, label: str) -> int:
    with manager.lease(model_pb2.ModelSpec(name="m", version_label=label)) as (version, _):
        return version


def test_a_label_moves_only_to_a_version_an_earlier_config_loaded(three_versions):
    """As TF Serving, also with the flag: a reload that moves a label to a version not loaded
    is refused whole, its version policy included, so a promotion loads the version first."""
    manager = ModelManager(
        [specific(three_versions, {1}, stable=1)], allow_labels_for_unavailable_models=True
    )
    moved = specific(three_versions, {1, 2}, stable=2, previous=1)
    with pytest.raises(ServingError, match="assign label to version 2 of model m, which is not"):
        manager.reload([moved])
    assert available(manager, "m") == [1]
    assert labelled(manager, "stable") == 1
    manager.reload([specific(three_versions, {1, 2}, stable=1)])  # staged: loaded, not labelled
    assert available(manager, "m") == [1, 2]
    manager.reload([moved])
    assert labelled(manager, "stable") == 2


def test_reload_config_request_adds_and_removes_models(serve, three_versions, half_plus_two):
    manager = ModelManager([ModelConfig("m", three_versions)])
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add(
        name="other", base_path=str(half_plus_two), model_platform="tensorflow"
    )
    entry.model_version_policy.all.SetInParent()
    with serve(manager) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        response = stub.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(config=config)
        )
        assert response.status.error_code == 0
        status = stub.GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "other"})
        )
        assert [s.version for s in status.model_version_status] == [123]
        with pytest.raises(grpc.RpcError) as caught:
            predict_version(channel)  # "m" is no longer configured
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "model_config_list { config { name: 'm' base_path: '/x' } }",
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            "ModelServerConfig::model_platform, model name is m",
        ),
        (
            "model_config_list { config { name: 'm' base_path: 'rel' "
            "model_platform: 'tensorflow' } }",
            "Expected model m to have an absolute path or URI; got base_path()=rel",
        ),
        (
            "model_config_list { config { name: 'm' base_path: '/x' model_platform: 'pytorch' } }",
            "Model m requests unsupported platform pytorch",
        ),
        (
            "model_config_list { config { nme: 'm' } }",
            "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:30",
        ),
    ],
    ids=["no-platform", "relative-path", "other-platform", "unknown-field"],
)
def test_invalid_configs_are_refused_with_tf_servings_reason(tmp_path, text, message):
    path = tmp_path / "models.config"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        read_config_file(path)
    assert message in str(caught.value)


def test_a_config_file_that_is_not_text_is_refused_as_tf_serving_refuses_a_malformed_one(
    tmp_path,
):
    path = tmp_path / "models.config"
    path.write_bytes(b"model_config_list { config { name: '\xff' } }")
    with pytest.raises(ConfigError) as caught:
        read_config_file(path)
    assert f"Invalid protobuf file: '{path}': Error parsing text-format" in str(caught.value)
    assert "can't decode byte 0xff" in str(caught.value)


def bad_config_files(tmp_path):
    own = tmp_path / "bad.config"
    own.write_text("improperly formatted file")
    shared = SHARED_TESTDATA / "bad_model_config.txt"
    return [own, shared] if shared.exists() else [own]


def test_a_malformed_config_file_stops_start_up(tmp_path):
    for path in bad_config_files(tmp_path):
        stderr = refused_start("model-server", "--port=0", f"--model_config_file={path}")
        assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in stderr
        assert f"Invalid protobuf file: '{path}'" in stderr
        assert "Traceback" not in stderr


def test_the_config_file_is_reread_when_polled(
    tmp_path, three_versions, half_plus_two, model_server_process
):
    path = tmp_path / "models.config"
    model = f'name: "m" base_path: "{three_versions}" model_platform: "tensorflow"'
    path.write_text(config_text(model))
    with model_server_process(
        f"--model_config_file={path}", "--model_config_file_poll_wait_seconds=0.2"
    ) as (_, channel):
        assert predict_version(channel) == 3
        path.write_text(config_text(model + " model_version_policy { specific { versions: 1 } }"))
        wait_until(lambda: predict_version(channel) == 1, 60, "the config reloaded")
