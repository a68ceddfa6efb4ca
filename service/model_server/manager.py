"""Which versions of which models are served: discovery by polling, loading, swapping, unloading.

As TF Serving does it: each model's version policy (latest N, all, or specific versions) names
the versions it wants from those complete on disk; a new version is loaded and warmed up beside
the old ones and takes traffic only then, after which versions no longer wanted are dropped.
Requests already running on a dropped version finish on it: they hold a reference to it.
"""

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import grpc

from service import model_repository
from service.model_server.errors import ServingError, invalid_argument, not_found, shown
from service.model_server.servable import SavedModelServable
from service.serving_config import VersionPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: Path
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    labels: tuple[tuple[str, int], ...] = ()


class VersionState(Enum):
    # TF Serving's ModelVersionStatus.State names.
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    END = "END"


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: VersionState
    error: str = ""


@dataclass
class _Model:
    config: ModelConfig
    served: dict[int, SavedModelServable] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    loading: set[int] = field(default_factory=set)
    unloaded: set[int] = field(default_factory=set)


Loader = Callable[[Path], SavedModelServable]


class ModelManager:
    def __init__(
        self,
        models: list[ModelConfig],
        load: Loader = SavedModelServable,
        allow_labels_for_unavailable_models: bool = False,
    ) -> None:
        self._load_servable = load
        self._allow_unavailable_labels = allow_labels_for_unavailable_models
        self._models: dict[str, _Model] = {}
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()  # one poll or reload at a time
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self.reload(models)

    def reload(self, models: list[ModelConfig]) -> None:
        """Serve exactly these models: new ones are loaded, dropped ones unloaded."""
        names = [config.name for config in models]
        for name in names:
            if names.count(name) > 1:
                raise invalid_argument(
                    f"Illegal to list model {shown(name)} multiple times in config list"
                )
        with self._sync_lock:
            # As TF Serving's ServerCore::ReloadConfig: the labels are checked against what is
            # loaded now, before anything changes, and a refusal leaves the whole config as it
            # was. So a config can only move a label to a version an earlier config loaded.
            self._check_labels(models)
            with self._lock:
                current = self._models
                self._models = {
                    config.name: _Model(config, **_state_of(current.get(config.name)))
                    for config in models
                }
            for name in current.keys() - self._models.keys():
                for servable in current[name].served.values():
                    servable.retire()
            self._sync_all()

    def poll_once(self) -> None:
        """Bring every model's served versions in line with what its base path holds."""
        with self._sync_lock:
            self._sync_all()

    def start_polling(self, interval_seconds: float) -> None:
        if interval_seconds > 0:
            self._poller = threading.Thread(
                target=self._poll_forever,
                args=(interval_seconds,),
                name="model-poller",
                daemon=True,
            )
            self._poller.start()

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join()

    def failed_versions(self) -> dict[str, dict[int, str]]:
        with self._lock:
            return {
                name: dict(model.failed) for name, model in self._models.items() if model.failed
            }

    @contextlib.contextmanager
    def lease(self, model_spec) -> Iterator[tuple[int, SavedModelServable]]:
        """The version and servable a request's ModelSpec names, held for the request."""
        name = model_spec.name
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        choice = model_spec.WhichOneof("version_choice")
        if choice == "version":
            wanted: int | None = model_spec.version.value
        elif choice == "version_label":
            wanted = self._version_for_label(name, model_spec.version_label)
        else:
            wanted = None
        with self._lock:
            version, servable = self._find(name, wanted)
            servable.acquire()
        try:
            yield version, servable
        finally:
            servable.release()

    def _find(self, name: str, version: int | None) -> tuple[int, SavedModelServable]:
        model = self._models.get(name)
        served = model.served if model else {}
        if version is None:
            if not served:
                raise not_found(f"Servable not found for request: Latest({shown(name)})")
            version = max(served)
        elif version not in served:
            raise not_found(f"Servable not found for request: Specific({shown(name)}, {version})")
        return version, served[version]

    def statuses(self, name: str, version: int | None = None) -> list[VersionStatus]:
        with self._lock:
            model = self._models.get(name)
            known = _statuses(model) if model else []
        if version is not None:
            known = [status for status in known if status.version == version]
            if not known:
                raise not_found(f"Could not find version {version} of model {shown(name)}")
        if not known:
            raise not_found(f"Could not find any versions of model {shown(name)}")
        return sorted(known, key=lambda status: status.version, reverse=True)

    def _version_for_label(self, name: str, label: str) -> int:
        with self._lock:
            model = self._models.get(name)
            labels = dict(model.config.labels) if model else {}
        if label not in labels:
            raise invalid_argument(f"Unrecognized servable version label: {shown(label)}")
        return labels[label]

    def _check_labels(self, models: list[ModelConfig]) -> None:
        with self._lock:
            now = {
                name: (dict(model.config.labels), set(model.served))
                for name, model in self._models.items()
            }
        for config in models:
            labels, available = now.get(config.name, ({}, set()))
            for label, version in config.labels:
                # TF Serving's flag lets a new label, or one left where it is, name a version
                # that is not loaded (so a server can start from a config with labels); moving a
                # label to such a version is refused all the same.
                if self._allow_unavailable_labels and labels.get(label, version) == version:
                    continue
                if version not in available:
                    raise ServingError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"Request to assign label to version {version} of model "
                        f"{shown(config.name)}, which is not currently available for "
                        "inference",
                    )

    def _poll_forever(self, interval_seconds: float) -> None:
        while not self._stop.wait(interval_seconds):
            try:
                self.poll_once()
            except Exception:
                log.exception("polling the model repository failed; trying again next time")

    def _sync_all(self) -> None:
        with self._lock:
            models = list(self._models.values())
        for model in models:
            self._sync(model)

    def _sync(self, model: _Model) -> None:
        on_disk = model_repository.complete_versions(model.config.base_path)
        wanted = model.config.policy.wanted(on_disk)
        for version in sorted(wanted - set(model.served) - set(model.failed), reverse=True):
            self._load(model, version, on_disk[version])
        with self._lock:
            # Keep serving what works until something wanted is up: never drop to nothing.
            keep = wanted & set(model.served) or set(model.served) & set(on_disk)
            retired = {v: model.served.pop(v) for v in list(model.served) if v not in keep}
            model.unloaded.update(retired)
        for version, servable in retired.items():
            servable.retire()
            log.info("unloaded %s version %d", model.config.name, version)

    def _load(self, model: _Model, version: int, path: Path) -> None:
        with self._lock:
            model.loading.add(version)
        try:
            servable = self._load_servable(path)
        except Exception as error:
            log.error(
                "failed to load %s version %d from %s: %s", model.config.name, version, path, error
            )
            with self._lock:
                model.loading.discard(version)
                model.failed[version] = f"Failed to load {path}: {error}"
            return
        with self._lock:
            model.loading.discard(version)
            model.unloaded.discard(version)
            model.served[version] = servable
        log.info("serving %s version %d from %s", model.config.name, version, path)


def _state_of(model: _Model | None) -> dict:
    if model is None:
        return {}
    return {"served": model.served, "failed": model.failed, "unloaded": model.unloaded}


def _statuses(model: _Model) -> list[VersionStatus]:
    # As TF Serving's state monitor: versions once served and then unloaded stay listed as END.
    return (
        [VersionStatus(v, VersionState.AVAILABLE) for v in model.served]
        + [VersionStatus(v, VersionState.LOADING) for v in model.loading]
        + [VersionStatus(v, VersionState.END, error) for v, error in model.failed.items()]
        + [VersionStatus(v, VersionState.END) for v in model.unloaded]
    )
