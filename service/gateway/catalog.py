"""Which models exist, and what nnserve.json says about a version: read from files, not gRPC.

TF Serving's gRPC API cannot list its models, and GetModelStatus does not show version labels.
The gateway therefore reads what the model server itself is configured with: TF Serving's model
config file (`NNSERVE_MODEL_CONFIG_FILE`, model names and version labels) when given, otherwise
the model repository (`NNSERVE_MODEL_REPO`, one folder per model, no labels).
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from service import model_repository, wire
from service.gateway.errors import GatewayError

METADATA_PATH = Path("assets.extra") / "nnserve.json"


class CatalogError(GatewayError):
    """The model config file or a model's nnserve.json cannot be read; `message` says why."""


@dataclass(frozen=True)
class ConfiguredModel:
    name: str
    base_path: Path
    labels: dict[str, int] = field(default_factory=dict)


class ModelCatalog:
    def __init__(self, model_repo: Path, config_file: Path | None = None) -> None:
        self._repo = model_repo
        self._config_file = config_file

    def models(self) -> list[ConfiguredModel]:
        """The models the model server is configured to serve, sorted by name."""
        if self._config_file is None:
            return self._repository_models()
        return self._configured_models(self._config_file)

    def model(self, name: str) -> ConfiguredModel | None:
        return next((model for model in self.models() if model.name == name), None)

    def version_metadata(self, name: str, version: int) -> dict:
        """The version's assets.extra/nnserve.json, as written by the training pipeline."""
        model = self.model(name)
        base = model.base_path if model else self._repo / name
        path = _version_dir(base, version) / METADATA_PATH
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise CatalogError(
                f"version {version} of model {name} has no {METADATA_PATH} (looked in {path})"
            ) from None
        except (OSError, ValueError) as error:
            raise CatalogError(f"cannot read {path}: {error}") from None

    def _repository_models(self) -> list[ConfiguredModel]:
        if not self._repo.is_dir():
            return []
        return [
            ConfiguredModel(entry.name, entry)
            for entry in sorted(self._repo.iterdir())
            if entry.is_dir() and not entry.name.startswith(".")
        ]

    @staticmethod
    def _configured_models(path: Path) -> list[ConfiguredModel]:
        try:
            config = text_format.Parse(path.read_text(), wire.ModelServerConfig())
        except (OSError, text_format.ParseError) as error:
            raise CatalogError(f"cannot read the model config file {path}: {error}") from None
        return sorted(
            (
                ConfiguredModel(item.name, Path(item.base_path), dict(item.version_labels))
                for item in config.model_config_list.config
            ),
            key=lambda model: model.name,
        )


def _version_dir(base: Path, version: int) -> Path:
    # TF Serving accepts zero-padded version folders ("00000123").
    return model_repository.list_versions(base).get(version, base / str(version))
