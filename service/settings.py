"""The one settings object each nnserve process reads from its `NNSERVE_*` environment."""

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NNSERVE_", extra="ignore")

    model_repo: Path = Field(
        Path("models"), description="Model repository: <repo>/<model>/<version>/saved_model.pb"
    )
    runs_dir: Path = Field(Path("runs"), description="Training runs and their reports")
    tfserving_addr: str = Field(
        "localhost:8500", description="host:port of the TensorFlow Serving gRPC API"
    )
    request_timeout_seconds: float = Field(
        10.0, gt=0, description="Deadline of one gateway call to the model server"
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
