"""TF Serving's --model_config_file: a ModelServerConfig text proto, checked as TF Serving does."""

from pathlib import Path

import grpc
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from service.model_server.errors import ServingError, invalid_argument, shown
from service.model_server.manager import ModelConfig
from service.serving_config import version_policy

CONFIG_TYPE = "tensorflow.serving.ModelServerConfig"


class ConfigError(ValueError):
    """A config file the server cannot start with, or reload."""


def read_config_file(path: Path) -> list[ModelConfig]:
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read model config file '{path}': {error.strerror}") from error
    except UnicodeDecodeError as error:  # else the config poller's thread would die of it
        raise ConfigError(
            f"Invalid protobuf file: '{path}': Error parsing text-format {CONFIG_TYPE}: {error}"
        ) from error
    try:
        config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as error:
        raise ConfigError(
            f"Invalid protobuf file: '{path}': Error parsing text-format {CONFIG_TYPE}: {error}"
        ) from error
    try:
        return models_from_config(config)
    except ServingError as error:
        raise ConfigError(f"{path}: {error.message}") from error


def models_from_config(config) -> list[ModelConfig]:
    """The models a ModelServerConfig (official or wire-compatible) lists."""
    if config.WhichOneof("config") != "model_config_list":
        raise ServingError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
            "ModelConfigList is currently supported",
        )
    return [_model(entry) for entry in config.model_config_list.config]


def _model(entry) -> ModelConfig:
    if not entry.model_platform:
        raise invalid_argument(
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            f"ModelServerConfig::model_platform, model name is {shown(entry.name)}"
        )
    if entry.model_platform != "tensorflow":
        raise invalid_argument(
            f"Model {shown(entry.name)} requests unsupported platform {shown(entry.model_platform)}"
        )
    if not Path(entry.base_path).is_absolute():
        raise invalid_argument(
            f"Expected model {shown(entry.name)} to have an absolute path or URI; "
            f"got base_path()={shown(entry.base_path)}"
        )
    return ModelConfig(
        name=entry.name,
        base_path=Path(entry.base_path),
        policy=version_policy(entry.model_version_policy),
        labels=tuple(sorted(entry.version_labels.items())),
    )
