"""Which models exist, and what nnserve.json says about a version: read from files, not gRPC.

TF Serving's gRPC API cannot list its models, and GetModelStatus does not show version labels.
The gateway therefore reads what the model server itself is configured with: TF Serving's model
config file (`NNSERVE_MODEL_CONFIG_FILE`, model names and version labels) when given, otherwise
the model repository (`NNSERVE_MODEL_REPO`, one folder per model, no labels).

Client-visible messages name models and versions, never a path on the server; the paths go
to the gateway's log.
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from service import model_repository, wire
from service.gateway.errors import GatewayError

METADATA_PATH = Path("assets.extra") / "nnserve.json"
# Characters that would make a model name more than one folder name (backslash for Windows).
_PATH_SEPARATORS = ("/", "\\", "\0")

log = logging.getLogger("nnserve.gateway")


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
        """The version's assets.extra/nnserve.json, as written by the training pipeline.

        Ask only for a version the model server serves: the name may come from a client.
        """
        model = self.model(name)
        if model is not None:
            base = model.base_path
        elif name in ("", ".", "..") or any(sep in name for sep in _PATH_SEPARATORS):
            raise CatalogError(f"model name {name!r} is not a folder name in the model repository")
        else:
            base = self._repo / name
        path = _version_dir(base, version) / METADATA_PATH
        which = f"version {version} of model {name}"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            log.warning("%s: no %s", which, path)
            raise CatalogError(f"{which} has no {METADATA_PATH}") from None
        except (OSError, ValueError) as error:
            log.warning("%s: cannot read %s: %s", which, path, error)
            reason = error.strerror if isinstance(error, OSError) else str(error)
            raise CatalogError(f"cannot read {METADATA_PATH} of {which}: {reason}") from None

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
            log.warning("cannot read the model config file %s: %s", path, error)
            reason = error.strerror if isinstance(error, OSError) else str(error)
            raise CatalogError(
                f"cannot read the model config file (NNSERVE_MODEL_CONFIG_FILE): {reason}"
            ) from None
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
