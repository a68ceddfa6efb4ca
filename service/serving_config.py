"""The single record of what is served: TF Serving's model config file, and promotion by labels.

The file is TF Serving's `--model_config_file`, a ModelServerConfig in text format, at
`<model repo>/models.config` unless NNSERVE_MODEL_CONFIG_FILE names another; the real
tensorflow/serving, `nnserve model-server` and the gateway all read it. For each model it records
the versions served (`model_version_policy { specific { versions: ... } }`) and two version
labels: `stable`, which the gateway's clients get when they name no version, and `previous`, the
stable version before it, which a rollback returns to.

TF Serving refuses, at a config reload, a label on a version it has not loaded, so a promotion is
written in three steps, each a config the model server takes on its own:
  (a) `stage`: the new version joins the served versions; then wait until the model server
      reports it AVAILABLE;
  (b) `label_stable`: `stable` moves to it and `previous` to the old stable;
  (c) `settle`: the served versions are exactly those the labels name.
`rolled_back` undoes a promotion in one step, since `previous` is loaded already.

Every write replaces the file atomically (a temporary file in the same folder, fsynced, then
renamed), inside a lock on a file beside it, so two writers (a promotion and
docker/tfserving_config.py) never undo each other's step. No TensorFlow here: the gateway imports
this module too.
"""

import contextlib
import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from service import model_repository, wire
from service.model_status import AVAILABLE, END, ModelServerUnavailable, ModelStatusClient

STABLE = "stable"
PREVIOUS = "previous"
PLATFORM = "tensorflow"
# TF Serving re-reads its config every --model_config_file_poll_wait_seconds (30 s in
# compose.yaml, 60 s in k8s/) and then loads and warms up the version: minutes, not seconds.
DEFAULT_PROMOTION_TIMEOUT_SECONDS = 300.0
_FIRST_PAUSE_SECONDS = 0.1
_LONGEST_PAUSE_SECONDS = 2.0

Config = wire.ModelServerConfig
ModelEntry = wire.model_server_config_pb2.ModelConfig

log = logging.getLogger(__name__)


class ServingConfigError(ValueError):
    """The config file cannot be read, or does not allow the change asked for; says why."""


class PromotionError(RuntimeError):
    """The new version did not become AVAILABLE; the config serves what it served before."""


@dataclass(frozen=True)
class VersionPolicy:
    """TF Serving's model_version_policy: `latest` N (default 1), `all`, or `specific`."""

    kind: str = "latest"
    num_versions: int = 1
    versions: frozenset[int] = frozenset()

    def wanted(self, on_disk: Iterable[int]) -> set[int]:
        available = sorted(on_disk)
        if self.kind == "all":
            return set(available)
        if self.kind == "specific":
            return self.versions & set(available)
        return set(available[-max(self.num_versions, 1) :])


def version_policy(policy) -> VersionPolicy:
    """A ServableVersionPolicy message (TF Serving's or service.wire's) as a VersionPolicy."""
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return VersionPolicy("all")
    if kind == "specific":
        return VersionPolicy("specific", versions=frozenset(policy.specific.versions))
    if kind == "latest":
        return VersionPolicy("latest", num_versions=policy.latest.num_versions)
    return VersionPolicy()


# --- the file ---------------------------------------------------------------------------------


# A text-format comment; TF Serving's parser skips it as ours does.
_COMMENT = "# "


def read(config_file: Path, missing_ok: bool = False) -> Config:
    """The config in the file; an empty one if there is no file and `missing_ok`."""
    try:
        text = config_file.read_text()
    except FileNotFoundError:
        if missing_ok:
            return Config()
        raise ServingConfigError(f"there is no model config file at {config_file}") from None
    except OSError as error:
        raise ServingConfigError(f"cannot read {config_file}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ServingConfigError(
            f"{config_file} is not a ModelServerConfig in text format: {error}"
        ) from None
    try:
        config = text_format.Parse(text, Config())
    except text_format.ParseError as error:
        raise ServingConfigError(
            f"{config_file} is not a ModelServerConfig in text format: {error}"
        ) from None
    if config.WhichOneof("config") == "custom_model_config":
        raise ServingConfigError(f"{config_file} holds a custom_model_config, not a model list")
    return config


def comment(text: str) -> str | None:
    """The one-line comment `write` put before the config whose file holds `text`, if any."""
    first, newline, _ = text.partition("\n")
    return first[len(_COMMENT) :] if newline and first.startswith(_COMMENT) else None


def write(config_file: Path, config: Config, comment: str = "") -> None:
    """Replace the file with `config`, after `comment` (one line, written as a text-format
    comment): readers see the old file or the new one, never a part."""
    if "\n" in comment:
        raise ValueError("a model config file's comment is one line")
    document = _copy(config)
    document.model_config_list.SetInParent()  # TF Serving refuses a config without the list
    text = (f"{_COMMENT}{comment}\n" if comment else "") + text_format.MessageToString(document)
    descriptor, staging = tempfile.mkstemp(dir=config_file.parent, prefix=f".{config_file.name}.")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(staging, 0o644)  # the model server and the gateway may run as other users
        os.replace(staging, config_file)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    directory = os.open(config_file.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)


def update(config_file: Path, change: Callable[[Config], Config]) -> Config:
    """Read, change and write the file as one step among its writers; returns the new config.

    A missing file counts as an empty config, and the file is written whenever it is missing,
    so that a model server can start from it.
    """
    with _locked(config_file):
        before = read(config_file, missing_ok=True)
        after = change(before)
        if after != before or not config_file.exists():
            write(config_file, after)
    return after


@contextlib.contextmanager
def _locked(config_file: Path) -> Iterator[None]:
    with open(config_file.with_name(f".{config_file.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        yield


# --- what the config says ---------------------------------------------------------------------


def entry(config: Config, model: str) -> ModelEntry | None:
    return next((item for item in config.model_config_list.config if item.name == model), None)


def labels(config: Config, model: str) -> dict[str, int]:
    item = entry(config, model)
    return dict(item.version_labels) if item is not None else {}


def only_models(config: Config, models: Collection[str]) -> Config:
    """A copy of `config` that lists only the entries of `models`, each as it is there: what a
    model server serving just those models is given (`nnserve up --models`)."""
    kept = _copy(config)
    del kept.model_config_list.config[:]
    kept.model_config_list.config.extend(
        item for item in config.model_config_list.config if item.name in models
    )
    return kept


def served_versions(config: Config, model: str, on_disk: Iterable[int]) -> set[int]:
    """The versions of `model` the config has served, of those on disk ({} if not listed)."""
    item = entry(config, model)
    return version_policy(item.model_version_policy).wanted(on_disk) if item is not None else set()


# --- the steps of a promotion and a rollback: each returns a changed copy ---------------------


def stage(config: Config, model: str, version: int, base_path: Path) -> Config:
    """(a) The model is listed (with `base_path`, if it was not) and `version` is served."""
    staged = _copy(config)
    item = entry(staged, model)
    base = os.path.abspath(base_path)
    if item is None:
        item = staged.model_config_list.config.add(
            name=model, base_path=base, model_platform=PLATFORM
        )
    elif Path(item.base_path) != Path(base):
        raise ServingConfigError(
            f"model {model} is served from {item.base_path}, not from {base}: "
            f"version {version} would be looked for there"
        )
    if item.model_version_policy.WhichOneof("policy_choice") == "specific":
        served = set(item.model_version_policy.specific.versions)
    else:
        # A policy of `latest` or `all` (as nnserve wrote before labels) becomes a list here: of
        # the versions the labels need, and the new one.
        served = set(item.version_labels.values())
    _serve(item, served | {version})
    return staged


def label_stable(config: Config, model: str, version: int) -> Config:
    """(b) `stable` names `version`; `previous` names the old stable (and is gone if none)."""
    labelled = _copy(config)
    item = _listed(labelled, model)
    if version not in _served(item):
        raise ServingConfigError(
            f"version {version} of model {model} is not among its served versions: "
            "a label on it would be refused"
        )
    old = item.version_labels.get(STABLE)
    if old == version:
        return labelled
    if old is None:
        item.version_labels.pop(PREVIOUS, None)
    else:
        item.version_labels[PREVIOUS] = old
    item.version_labels[STABLE] = version
    return labelled


def settle(config: Config, model: str) -> Config:
    """(c) The model serves exactly the versions its labels name: `stable` and `previous`."""
    settled = _copy(config)
    item = _listed(settled, model)
    if STABLE not in item.version_labels:
        raise ServingConfigError(f"model {model} has no stable version to settle on")
    _serve(item, item.version_labels.values())
    return settled


def rolled_back(config: Config, model: str) -> Config:
    """`previous` becomes `stable`, and the old stable is no longer served."""
    back = _copy(config)
    item = _listed(back, model)
    if PREVIOUS not in item.version_labels:
        stable = item.version_labels.get(STABLE)
        now = f" (stable is version {stable})" if stable is not None else ""
        raise ServingConfigError(f"model {model} has no previous version to roll back to{now}")
    item.version_labels[STABLE] = item.version_labels.pop(PREVIOUS)
    _serve(item, item.version_labels.values())
    return back


def _copy(config: Config) -> Config:
    copied = Config()
    copied.CopyFrom(config)
    return copied


def _listed(config: Config, model: str) -> ModelEntry:
    item = entry(config, model)
    if item is None:
        raise ServingConfigError(f"model {model} is not in the model config")
    return item


def _served(item: ModelEntry) -> set[int]:
    policy = item.model_version_policy
    if policy.WhichOneof("policy_choice") != "specific":
        return set()
    return set(policy.specific.versions)


def _serve(item: ModelEntry, versions: Iterable[int]) -> None:
    specific = item.model_version_policy.specific  # (the policy becomes `specific`)
    del specific.versions[:]
    specific.versions.extend(sorted(set(versions)))


# --- promotion --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Promotion:
    model: str
    version: int
    previous: int | None  # the stable version before, now labelled `previous`
    served: tuple[int, ...]
    # False when no model server answered: the three steps were then written as one.
    confirmed_available: bool


def promote(
    config_file: Path,
    model: str,
    version: int,
    base_path: Path,
    model_server: ModelStatusClient | None,
    timeout_seconds: float = DEFAULT_PROMOTION_TIMEOUT_SECONDS,
) -> Promotion:
    """Make `version` the stable version of `model`, in the three steps above.

    Where no model server answers (`model_server` None, or nothing at its address), nothing can
    be loaded yet, and the three steps are written at once. If the version does not become
    AVAILABLE within `timeout_seconds` (or fails to load), the config is put back as it was and
    PromotionError says why.
    """
    try:
        if model_server is not None:
            model_server.statuses(model)
    except ModelServerUnavailable as error:
        log.info("%s; promoting %s version %d in one step", error, model, version)
        model_server = None
    if model_server is None:

        def at_once(config: Config) -> Config:
            staged = stage(config, model, version, base_path)
            return settle(label_stable(staged, model, version), model)

        config = update(config_file, at_once)
        return _promotion(config, model, version, confirmed_available=False)

    before: ModelEntry | None = None

    def staged(config: Config) -> Config:
        nonlocal before
        before = _copy_entry(entry(config, model))
        return stage(config, model, version, base_path)

    after_stage = entry(update(config_file, staged), model)
    log.info("staged %s version %d; waiting until the model server has it", model, version)
    try:
        wait_until_available(model_server, model, version, timeout_seconds)
    except BaseException:
        # Also on Ctrl-C or an unexpected answer: a version left staged would be served.
        update(config_file, lambda c: _unstaged(c, model, version, before, after_stage))
        raise
    update(config_file, lambda c: label_stable(c, model, version))
    config = update(config_file, lambda c: settle(c, model))
    return _promotion(config, model, version, confirmed_available=True)


def wait_until_available(
    model_server: ModelStatusClient, model: str, version: int, timeout_seconds: float
) -> None:
    """Return once the model server reports `version` of `model` AVAILABLE; PromotionError if it
    fails to load or is not AVAILABLE within `timeout_seconds` (asked with growing pauses)."""
    deadline = time.monotonic() + timeout_seconds
    pause = _FIRST_PAUSE_SECONDS
    last = "not known to the model server"
    while True:
        try:
            status = next((s for s in model_server.statuses(model) if s.version == version), None)
        except ModelServerUnavailable as error:  # restarting: ask again
            status, last = None, str(error)
        if status is not None:
            if status.state == AVAILABLE:
                return
            if status.state == END and status.error:
                raise PromotionError(
                    f"version {version} of {model} failed to load on the model server: "
                    f"{status.error}"
                )
            last = status.state
        if time.monotonic() + pause > deadline:
            raise PromotionError(
                f"version {version} of {model} was not AVAILABLE on the model server at "
                f"{model_server.address} within {timeout_seconds:g} s (last seen: {last}); does "
                "it re-read the config file (--model_config_file_poll_wait_seconds)?"
            )
        time.sleep(pause)
        pause = min(pause * 2, _LONGEST_PAUSE_SECONDS)


def add_missing_models(
    config_file: Path,
    repo: Path,
    model_server: ModelStatusClient | None,
    timeout_seconds: float = DEFAULT_PROMOTION_TIMEOUT_SECONDS,
    only: Collection[str] | None = None,
) -> list[Promotion]:
    """List every model of the repository (or those of it in `only`) the config lacks, its
    newest complete version stable.

    Models already listed are left as they are: their labels and versions are the record.
    """
    listed = {item.name for item in read(config_file, missing_ok=True).model_config_list.config}
    added = []
    for model in model_repository.models(repo):
        if model not in listed and (only is None or model in only):
            newest = max(model_repository.complete_versions(repo / model))
            added.append(
                promote(config_file, model, newest, repo / model, model_server, timeout_seconds)
            )
    if not config_file.exists():
        update(config_file, lambda config: config)  # an empty list: a server can start from it
    return added


def _copy_entry(item: ModelEntry | None) -> ModelEntry | None:
    if item is None:
        return None
    copied = ModelEntry()
    copied.CopyFrom(item)
    return copied


def _unstaged(
    config: Config,
    model: str,
    version: int,
    before: ModelEntry | None,
    after_stage: ModelEntry | None,
) -> Config:
    """Undo (a): the model's entry as it was before, if no one has changed it since; otherwise
    only `version` taken out of its served versions, unless a label names it now."""
    undone = _copy(config)
    entries = undone.model_config_list.config
    index = next((i for i, item in enumerate(entries) if item.name == model), None)
    if index is None:
        return undone
    if entries[index] == after_stage:
        if before is None:
            del entries[index]
        else:
            entries[index].CopyFrom(before)
    elif version not in entries[index].version_labels.values():
        remaining = _served(entries[index]) - {version}
        if remaining:
            _serve(entries[index], remaining)
        else:
            del entries[index]
    return undone


def _promotion(config: Config, model: str, version: int, confirmed_available: bool) -> Promotion:
    item = _listed(config, model)
    return Promotion(
        model,
        version,
        item.version_labels.get(PREVIOUS),
        tuple(sorted(_served(item))),
        confirmed_available,
    )
