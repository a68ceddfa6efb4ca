"""Which versions of which models are served: discovery by polling, loading, swapping, unloading.

The policy is TF Serving's default, "latest 1": the highest complete version is served. A new
version is loaded beside the old one and takes traffic only once loaded; requests already running
on the old one finish on it, because they hold a reference to it.
"""

import logging
import threading
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from service import model_repository
from service.model_server.errors import not_found
from service.model_server.servable import SavedModelServable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: Path


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


class ModelManager:
    def __init__(self, models: list[ModelConfig]) -> None:
        self._models = {config.name: _Model(config) for config in models}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def poll_once(self) -> None:
        """Bring every model's served versions in line with what its base path holds."""
        for model in self._models.values():
            self._sync(model)

    def start_polling(self, interval_seconds: float) -> None:
        self.poll_once()
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

    def servable(self, name: str, version: int | None = None) -> tuple[int, SavedModelServable]:
        """The servable for a request: a given version, or the latest one served."""
        with self._lock:
            model = self._models.get(name)
            served = dict(model.served) if model else {}
        if version is None:
            if not served:
                raise not_found(f"Servable not found for request: Latest({name})")
            version = max(served)
        elif version not in served:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return version, served[version]

    def statuses(self, name: str, version: int | None = None) -> list[VersionStatus]:
        with self._lock:
            model = self._models.get(name)
            if model is None:
                raise not_found(f"Could not find any versions of model {name}")
            known = [VersionStatus(v, VersionState.AVAILABLE) for v in model.served]
            known += [VersionStatus(v, VersionState.LOADING) for v in model.loading]
            known += [
                VersionStatus(v, VersionState.END, error) for v, error in model.failed.items()
            ]
        if version is not None:
            known = [status for status in known if status.version == version]
            if not known:
                raise not_found(f"Could not find version {version} of model {name}")
        if not known:
            raise not_found(f"Could not find any versions of model {name}")
        return sorted(known, key=lambda status: status.version, reverse=True)

    def _poll_forever(self, interval_seconds: float) -> None:
        while not self._stop.wait(interval_seconds):
            try:
                self.poll_once()
            except Exception:
                log.exception("polling the model repository failed; trying again next time")

    def _sync(self, model: _Model) -> None:
        on_disk = {
            version: path
            for version, path in model_repository.list_versions(model.config.base_path).items()
            if model_repository.is_complete(path)
        }
        if not on_disk:
            return
        wanted = max(on_disk)
        if wanted not in model.served and wanted not in model.failed:
            self._load(model, wanted, on_disk[wanted])
        with self._lock:
            if wanted in model.served:
                retired = [v for v in model.served if v != wanted]
                for version in retired:
                    del model.served[version]
            else:
                # The wanted version failed to load: keep serving what already works.
                retired = [v for v in model.served if v not in on_disk]
                for version in retired:
                    del model.served[version]
        for version in retired:
            log.info("unloaded %s version %d", model.config.name, version)

    def _load(self, model: _Model, version: int, path: Path) -> None:
        with self._lock:
            model.loading.add(version)
        try:
            servable = SavedModelServable(path)
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
            model.served[version] = servable
        log.info("serving %s version %d from %s", model.config.name, version, path)
