"""What the model registry commands do: describe each model's versions, check a version before it
is promoted, roll back, and prune old versions. `nnserve models / promote / rollback` print it
(service/cli.py); the retraining flow calls `prune`.

A model's versions are the folders of its base path (the config's `base_path` when the model is
listed there, else `<repo>/<model>`); what each is comes from its `assets.extra/nnserve.json`;
which are served and labelled comes from the model config (service/serving_config.py).
"""

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from service import model_repository, serving_config
from service.model_status import AVAILABLE, ModelServerUnavailable, ModelStatusClient
from service.serving_config import PREVIOUS, Config


class RegistryError(Exception):
    """A command the repository or the model server does not allow now; the message says why."""


@dataclass(frozen=True)
class VersionInfo:
    version: int
    complete: bool
    served: bool
    labels: tuple[str, ...]
    metadata: dict | None  # nnserve.json; None when the version has none
    metadata_error: str | None = None

    @property
    def rejection(self) -> str | None:
        return model_repository.rejection(self.metadata)

    def to_json(self) -> dict:
        metadata = self.metadata or {}
        return {
            "version": self.version,
            "complete": self.complete,
            "served": self.served,
            "labels": list(self.labels),
            "metrics": metadata.get("metrics"),
            "dataset_fingerprint": metadata.get("dataset_fingerprint"),
            "created_at": metadata.get("created_at"),
            "flow_run_id": metadata.get("flow_run_id"),
            model_repository.DECISION: metadata.get(model_repository.DECISION),
            "metadata_error": self.metadata_error,
        }


@dataclass(frozen=True)
class ModelInfo:
    name: str
    base_path: Path
    listed: bool  # whether the model config lists the model
    labels: dict[str, int]
    versions: list[VersionInfo]  # newest first

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "base_path": str(self.base_path),
            "listed": self.listed,
            "labels": self.labels,
            "versions": [version.to_json() for version in self.versions],
        }


def base_path(repo: Path, config: Config, model: str) -> Path:
    """Where the versions of `model` are: the config's base path if it lists the model."""
    item = serving_config.entry(config, model)
    return Path(item.base_path) if item is not None else repo / model


def describe(repo: Path, config: Config, model: str | None = None) -> list[ModelInfo]:
    """Every model of the config and the repository (or just `model`), sorted by name."""
    names = set(model_repository.models(repo))
    names.update(item.name for item in config.model_config_list.config)
    if model is not None:
        if model not in names:
            raise RegistryError(f"there is no model {model} in {repo} or in the model config")
        names = {model}
    return [_describe_model(repo, config, name) for name in sorted(names)]


def _describe_model(repo: Path, config: Config, model: str) -> ModelInfo:
    base = base_path(repo, config, model)
    on_disk = model_repository.list_versions(base)
    complete = model_repository.complete_versions(base)
    served = serving_config.served_versions(config, model, complete)
    labels = serving_config.labels(config, model)
    versions = []
    for version in sorted(on_disk, reverse=True):
        try:
            metadata, error = model_repository.read_metadata(on_disk[version]), None
        except (OSError, ValueError) as problem:
            metadata, error = None, f"cannot read {model_repository.METADATA_PATH}: {problem}"
        versions.append(
            VersionInfo(
                version,
                version in complete,
                version in served,
                tuple(sorted(label for label, v in labels.items() if v == version)),
                metadata,
                error,
            )
        )
    return ModelInfo(model, base, serving_config.entry(config, model) is not None, labels, versions)


def check_promotable(base: Path, model: str, version: int, force: bool) -> None:
    """Refuse a version no model server could load, and, unless forced, one the gate rejected."""
    version_dir = model_repository.list_versions(base).get(version)
    if version_dir is None:
        raise RegistryError(f"model {model} has no version {version} in {base}")
    if not model_repository.is_complete(version_dir):
        raise RegistryError(
            f"version {version} of {model} is incomplete: {version_dir} has no saved_model.pb"
        )
    if force:
        return
    try:
        reason = model_repository.rejection(model_repository.read_metadata(version_dir))
    except (OSError, ValueError) as error:
        raise RegistryError(
            f"cannot tell whether version {version} of {model} was accepted: "
            f"{model_repository.METADATA_PATH}: {error} (--force promotes it anyway)"
        ) from None
    if reason is not None:
        raise RegistryError(
            f"version {version} of {model} was rejected: {reason} (--force promotes it anyway)"
        )


def roll_back(config_file: Path, model: str, model_server: ModelStatusClient | None) -> int:
    """Make `previous` the stable version of `model` in one write; returns that version.

    A model server that answers must have it AVAILABLE: it would refuse the label otherwise.
    """
    config = serving_config.read(config_file)
    serving_config.rolled_back(config, model)  # refuses a model without `previous`, says why
    previous = serving_config.labels(config, model)[PREVIOUS]
    if model_server is not None:
        try:
            statuses = model_server.statuses(model)
        except ModelServerUnavailable:
            statuses = None  # nothing serves yet: it will read the file when it starts
        if statuses is not None:
            state = next((s.state for s in statuses if s.version == previous), "not loaded")
            if state != AVAILABLE:
                raise RegistryError(
                    f"version {previous} of {model} (previous) is {state} on the model server "
                    f"at {model_server.address}, not AVAILABLE: not rolled back"
                )
    serving_config.update(config_file, lambda current: serving_config.rolled_back(current, model))
    return previous


def prune(repo: Path, model: str, keep: int, config: Config) -> list[int]:
    """Delete the versions of `<repo>/<model>` beyond the `keep` newest, except any version the
    config labels or serves; returns the versions deleted, oldest first."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    base = repo / model
    on_disk = model_repository.list_versions(base)
    protected = set(serving_config.labels(config, model).values())
    protected |= serving_config.served_versions(
        config, model, model_repository.complete_versions(base)
    )
    deleted = []
    for version in sorted(on_disk, reverse=True)[keep:]:
        if version in protected:
            continue
        # Renamed out of the versions first: a folder half deleted must not look like a version.
        doomed = base / f".pruned-{uuid.uuid4().hex}"
        on_disk[version].rename(doomed)
        shutil.rmtree(doomed)
        deleted.append(version)
    return sorted(deleted)
