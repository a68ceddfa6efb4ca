"""The one settings object each nnserve process reads from its `NNSERVE_*` environment."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.model_repository import CONFIG_FILE_NAME
from service.model_server.channel_arguments import MODEL_SERVER_MIN_PING_INTERVAL_SECONDS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NNSERVE_", extra="ignore")

    model_repo: Path = Field(
        Path("models"), description="Model repository: <repo>/<model>/<version>/saved_model.pb"
    )
    runs_dir: Path = Field(Path("runs"), description="Training runs and their reports")
    data_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "nnserve" / "datasets",
        description="Where downloaded dataset files are kept (a spec's dataset.cache_dir wins)",
    )
    tfserving_addr: str = Field(
        "localhost:8500", description="host:port of the TensorFlow Serving gRPC API"
    )
    tfserving_image: str = Field(
        "tensorflow/serving:2.20.0",
        description="Image `nnserve up --engine docker` runs the model server from",
    )
    request_timeout_seconds: float = Field(
        10.0, gt=0, description="Deadline of one gateway call to the model server"
    )
    model_config_file: Path | None = Field(
        None,
        description="TF Serving's model config file, the record of what is served (models, "
        "versions, labels): `nnserve up`, `models`, `promote` and `rollback` default to "
        "<model repo>/models.config; the gateway reads it only when set, and without it takes "
        "the models from the folders of the model repository",
    )
    promotion_timeout_seconds: float = Field(
        300.0,
        gt=0,
        description="How long a promotion waits for the model server to report the new version "
        "AVAILABLE before it gives up and serves what it served before",
    )
    notification_block: str | None = Field(
        None,
        description="Prefect notification block, as <block type>/<block name> (such as "
        "custom-webhook/ml-alerts), that failed and rejected retraining runs are announced "
        "through; none: no notifications",
    )
    # The gateway's own settings.
    backend_retries: int = Field(
        3, ge=0, description="Retries of a model server call that failed as UNAVAILABLE"
    )
    backend_keepalive_seconds: float = Field(
        30.0,
        ge=MODEL_SERVER_MIN_PING_INTERVAL_SECONDS,
        description="How often the gateway pings an idle connection to the model server",
    )
    backend_retry_backoff_seconds: float = Field(
        0.05, ge=0, description="Pause before the first retry; doubled before each further one"
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, gt=0, description="Largest request body the gateway reads (else 413)"
    )
    api_keys: str = Field(
        "", description="Comma-separated API keys; when set, /v1/ requests need one (401 / 403)"
    )
    api_key_header: str = Field("X-API-Key", description="Header that carries the API key")
    cors_origins: str = Field(
        "", description="Comma-separated origins allowed by CORS ('*' for any); empty: no CORS"
    )
    max_images: int = Field(
        32, gt=0, le=1000, description="Most images in one :classify_images request"
    )
    max_image_pixels: int = Field(
        4096 * 4096, gt=0, description="Largest uploaded image (width x height) the gateway decodes"
    )
    max_request_pixels: int = Field(
        4 * 4096 * 4096,
        gt=0,
        description="Most pixels (width x height) of all images of one request together",
    )
    # Chosen by the gateway's peak memory for the largest request they let through: at most
    # 140 MB above its 90 MB at rest (README, HTTP API).
    max_json_values: int = Field(
        1024 * 1024, gt=0, description="Most JSON values (arrays, objects, scalars) in a body"
    )
    max_tensor_elements: int = Field(
        512 * 1024, gt=0, description="Most elements in one input of a :predict JSON request"
    )
    max_request_elements: int = Field(
        1024 * 1024,
        gt=0,
        description="Most elements in all inputs of a :predict JSON request together",
    )
    max_header_bytes: int = Field(
        32 * 1024,
        gt=0,
        description="Largest request line and headers the gateway reads (else 431)",
    )
    max_headers: int = Field(
        100, gt=0, description="Most header fields in a request (else 431, connection closed)"
    )
    max_name_length: int = Field(
        256,
        gt=0,
        description="Longest model name, version label or signature name the gateway passes on",
    )
    worker_threads: int = Field(
        2,
        gt=0,
        description="Threads that parse large bodies, encode large answers and decode images",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO",
        description="Level of the gateway's and the model server's JSON logs (`nnserve up` "
        "starts both at WARNING unless this is set), and of the library logs `up`, `train` and "
        "`schedule` show on the terminal (unset: WARNING, or INFO with --verbose)",
    )

    def serving_config_file(self) -> Path:
        """Where the record of what is served is: NNSERVE_MODEL_CONFIG_FILE, or in the repo."""
        return self.model_config_file or self.model_repo / CONFIG_FILE_NAME

    def api_key_list(self) -> list[str]:
        return _split(self.api_keys)

    def cors_origin_list(self) -> list[str]:
        return _split(self.cors_origins)


def env_name(field: str) -> str:
    """The environment variable that sets a field of `Settings`."""
    return f"{Settings.model_config['env_prefix']}{field.upper()}"


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
