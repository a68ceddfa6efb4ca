"""The served view of `nnserve up --models`: the model config the model server and the gateway
read when `up` serves fewer models than the record lists.

The record (service/serving_config.py) keeps every model's entry and labels, which are promotion
state; the view lists only the chosen models' entries. It is copied from the record whenever the
record changes, so that `nnserve promote` and `rollback`, which write the record and then wait
for the model server, take effect while `up --models` runs.
"""

import contextlib
import json
import logging
import threading
from collections.abc import Collection, Iterator
from pathlib import Path

from service import serving_config

# The model server re-reads its config every second under `up`: a change of the record reaches
# it within 1.5 s.
POLL_SECONDS = 0.5
_STOP_TIMEOUT_SECONDS = 10

log = logging.getLogger(__name__)


def path_for(record: Path, grpc_port: int) -> Path:
    """Where `up` on `grpc_port` keeps the view: beside the record, whose folder is writable
    (the record's own writes need that) and is what a model server container mounts already.
    Two `up`s cannot share a gRPC port, so neither can they share a view."""
    return record.with_name(f"{record.name}.up-{grpc_port}")


# The view's first line names the models it keeps, so that the gateway and `nnserve promote` can
# tell a model the view leaves out from one the record lacks.
_CHOSEN_PREFIX = "nnserve up --models serves only: "


def chosen_models(config_text: str) -> frozenset[str] | None:
    """The models a view keeps, given the text of its file; None if the text is not a view's."""
    first = serving_config.comment(config_text)
    if first is None or not first.startswith(_CHOSEN_PREFIX):
        return None
    try:
        names = json.loads(first[len(_CHOSEN_PREFIX) :])
    except ValueError:
        return None
    return frozenset(names) if isinstance(names, list) else None


def leaves_out(record: Path, grpc_address: str, model: str) -> str | None:
    """Why the model server at `grpc_address` will not load `model` whatever the record says:
    an `nnserve up --models` serves it a view of `record` without the model. None otherwise."""
    port = grpc_address.rpartition(":")[2]
    if not port.isdigit():
        return None
    try:
        chosen = chosen_models(path_for(record, int(port)).read_text())
    except (OSError, UnicodeDecodeError):  # no view (or none of ours): no `up --models` there
        return None
    if chosen is None or model in chosen:
        return None
    return (
        f"the model server at {grpc_address} serves only {', '.join(sorted(chosen))} "
        f"(`nnserve up --models`), not {model}"
    )


@contextlib.contextmanager
def mirrored(record: Path, view: Path, models: Collection[str]) -> Iterator[Path]:
    """Write the view of `record` at `view`, listing only `models`; keep it in step with the
    record while inside; remove it on leaving, however that happens. ServingConfigError if the
    record cannot be read, or the view written, at the start."""
    mirror = _Mirror(record, view, frozenset(models))
    stop = threading.Event()
    thread = threading.Thread(target=mirror.follow, args=(stop,), name="served-view", daemon=True)
    try:
        try:
            mirror.copy()
        except OSError as error:  # a read-only folder, say: the record was only read so far
            raise serving_config.ServingConfigError(
                f"cannot write {view}, the view of {record} that `nnserve up --models` serves: "
                f"{error.strerror}"
            ) from None
        thread.start()
        yield view
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(_STOP_TIMEOUT_SECONDS)
        view.unlink(missing_ok=True)


class _Mirror:
    def __init__(self, record: Path, view: Path, models: frozenset[str]) -> None:
        self._record = record
        self._view = view
        self._models = models
        self._written: serving_config.Config | None = None
        self._failure = ""

    def copy(self) -> None:
        """Write the view if what the record says of the models differs from the view written.
        The record is read whole each time: it is small, and it is replaced by renames, so its
        modification time alone could miss a change within one timestamp tick."""
        view = serving_config.only_models(serving_config.read(self._record), self._models)
        if view != self._written:
            chosen = json.dumps(sorted(self._models))
            serving_config.write(self._view, view, comment=_CHOSEN_PREFIX + chosen)
            self._written = view

    def follow(self, stop: threading.Event) -> None:
        while not stop.wait(POLL_SECONDS):
            try:
                self.copy()
            except (serving_config.ServingConfigError, OSError) as error:
                # Once per new failure: a record being edited by hand may stay broken a while.
                if str(error) != self._failure:
                    log.warning("%s; the model server keeps serving the models as before", error)
                self._failure = str(error)
            else:
                self._failure = ""
