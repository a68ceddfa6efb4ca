"""Which models exist, and what nnserve.json says about a version: read from files, not gRPC.

TF Serving's gRPC API cannot list its models, and GetModelStatus does not show version labels.
The gateway therefore reads what the model server itself is configured with: TF Serving's model
config file (`NNSERVE_MODEL_CONFIG_FILE`, model names and version labels) when given, otherwise
the model repository (`NNSERVE_MODEL_REPO`, one folder per model, no labels).

Every predict asks whether its model has a `stable` label (see service/serving_config.py), so the
config file is looked at (stat) at most every 0.1 s, and parsed again only when it has changed:
when its modification time, size or inode differ from the last read, or when it was modified so
shortly before that read that a change in the same timestamp tick would not show (as git's
"racily clean" index entries). Measured with a canned backend, a predict's CPU time grew by
about 2 us with a stat per request; the 0.1 s this saves a busy gateway at most is no staleness
that matters: the gateway sends the label's name, and the model server resolves it.

Client-visible messages name models and versions, never a path on the server; the paths go
to the gateway's log.
"""

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from service import model_repository, served_view, wire
from service.gateway.errors import GatewayError
from service.model_repository import METADATA_PATH
from service.serving_config import STABLE, VersionPolicy, version_policy
from service.settings import env_name

# A file modified less than this before it was read may have changed again unseen since.
_RACY_NANOSECONDS = 1_000_000_000
_CHECK_SECONDS = 0.1
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
    # Which of the versions on disk the model server serves (TF Serving's default: the newest).
    policy: VersionPolicy = field(default_factory=VersionPolicy)


@dataclass(frozen=True)
class _ConfigRead:
    """The config file as last read: its models (the last good ones if it failed) and error."""

    signature: tuple[int, int, int] | None  # mtime (ns), size, inode
    racy: bool
    models: dict[str, ConfiguredModel]
    # The models an `nnserve up --models` view keeps; None when the file is not such a view.
    chosen: frozenset[str] | None
    error: "CatalogError | None" = None


class ModelCatalog:
    def __init__(self, model_repo: Path, config_file: Path | None = None) -> None:
        self._repo = model_repo
        self._config_file = config_file
        self._read = _ConfigRead(None, True, {}, None)
        self._next_check = 0.0  # time.monotonic() of the next look at the config file

    def models(self) -> list[ConfiguredModel]:
        """The models the model server is configured to serve, sorted by name."""
        if self._config_file is None:
            return self._repository_models()
        read = self._current(self._config_file)
        if read.error is not None:
            raise read.error
        return sorted(read.models.values(), key=lambda model: model.name)

    def model(self, name: str) -> ConfiguredModel | None:
        return next((model for model in self.models() if model.name == name), None)

    def default_label(self, name: str) -> str | None:
        """The label a request that names no version of `name` goes to: `stable` when the config
        gives the model one. A config that cannot be read now leaves the last one read in force:
        predictions do not fail for it (`models()` and /readyz report it)."""
        if self._config_file is None:
            return None
        model = self._current(self._config_file).models.get(name)
        return STABLE if model is not None and STABLE in model.labels else None

    def version_metadata(self, name: str, version: int) -> dict:
        """The version's assets.extra/nnserve.json, as written by the training pipeline.

        Ask only for a version the model server serves: the name may come from a client.
        """
        model = self.model(name)
        if model is not None:
            base = model.base_path
        elif not _is_folder_name(name):
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

    def not_served(self, name: str, version: int | None = None) -> str | None:
        """Why the model server has no `name` (or no `version` of it) although the model
        repository holds it: the model config leaves it out. None when that is not the reason
        (nothing on disk, no config file, or a version the config serves that is not loaded)."""
        if self._config_file is None:
            return None
        read = self._current(self._config_file)
        model = read.models.get(name)
        if model is None:
            if not _is_folder_name(name):
                return None
            on_disk = model_repository.complete_versions(self._repo / name)
            if not on_disk:
                return None
            why = (
                f"`nnserve up --models` serves only {', '.join(sorted(read.chosen))}"
                if read.chosen is not None
                else f"it is not in the model config file ({env_name('model_config_file')})"
            )
            return (
                f"model {name} has versions on disk ({_numbers(on_disk)}) but is not served: {why}"
            )
        if version is None:
            return None
        on_disk = model_repository.complete_versions(model.base_path)
        served = model.policy.wanted(on_disk)
        if version not in on_disk or version in served:
            return None
        serves = f"serves versions {_numbers(served)}" if served else "serves no version"
        return (
            f"version {version} of model {name} is on disk but not served: the model config file "
            f"({env_name('model_config_file')}) {serves} of it"
        )

    def _repository_models(self) -> list[ConfiguredModel]:
        if not self._repo.is_dir():
            return []
        return [
            ConfiguredModel(entry.name, entry)
            for entry in sorted(self._repo.iterdir())
            if entry.is_dir() and not entry.name.startswith(".")
        ]

    def _current(self, path: Path) -> _ConfigRead:
        now = time.monotonic()
        if now < self._next_check:
            return self._read
        self._next_check = now + _CHECK_SECONDS
        try:
            status = os.stat(path)
            signature = (status.st_mtime_ns, status.st_size, status.st_ino)
        except OSError:
            signature = None
        if signature is not None and signature == self._read.signature and not self._read.racy:
            return self._read
        racy = signature is None or time.time_ns() - signature[0] < _RACY_NANOSECONDS
        try:
            self._read = _ConfigRead(signature, racy, *self._configured_models(path))
        except CatalogError as error:
            if self._read.error is None or self._read.error.message != error.message:
                # Once per new failure: this runs on every predict while the file is bad.
                log.warning("%s: %s; routing as the config read before says", path, error.message)
            self._read = _ConfigRead(signature, racy, self._read.models, self._read.chosen, error)
        return self._read

    @staticmethod
    def _configured_models(path: Path) -> tuple[dict[str, ConfiguredModel], frozenset[str] | None]:
        """The models the config file lists, and those it keeps if it is an `up --models` view."""
        try:
            text = path.read_text()
            config = text_format.Parse(text, wire.ModelServerConfig())
        except (OSError, UnicodeDecodeError, text_format.ParseError) as error:
            reason = error.strerror if isinstance(error, OSError) else str(error)
            raise CatalogError(
                f"cannot read the model config file (NNSERVE_MODEL_CONFIG_FILE): {reason}"
            ) from None
        models = {
            item.name: ConfiguredModel(
                item.name,
                Path(item.base_path),
                dict(item.version_labels),
                version_policy(item.model_version_policy),
            )
            for item in config.model_config_list.config
        }
        return models, served_view.chosen_models(text)


def _is_folder_name(name: str) -> bool:
    return name not in ("", ".", "..") and not any(sep in name for sep in _PATH_SEPARATORS)


def _numbers(versions) -> str:
    return ", ".join(str(version) for version in sorted(versions))


def _version_dir(base: Path, version: int) -> Path:
    # TF Serving accepts zero-padded version folders ("00000123").
    return model_repository.list_versions(base).get(version, base / str(version))
