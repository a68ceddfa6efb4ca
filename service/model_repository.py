"""TF Serving's model repository layout: `<repo>/<model>/<version>/saved_model.pb` + `variables/`.

Shared by the pipeline, which publishes versions, and the model server, which discovers them.
Beside the graph, `<version>/assets.extra/nnserve.json` describes a version (written by
pipeline/export.py; service/version_contract.py describes its input); its `decision` field says
whether the retraining gate accepted it, and
`<version>/assets.extra/tf_serving_warmup_requests` holds the requests a server replays before
the version takes traffic (written by pipeline/warmup_records.py).
"""

import json
import os
import shutil
import uuid
from pathlib import Path

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
# What a version is, for nnserve (service/version_contract.py reads and checks it).
METADATA_PATH = Path("assets.extra") / "nnserve.json"
# TF Serving's model config, the record of what is served (service/serving_config.py), is kept
# here in the repository unless NNSERVE_MODEL_CONFIG_FILE names another place.
CONFIG_FILE_NAME = "models.config"
# nnserve.json's verdict of the retraining gate on a version:
#   "decision": {"accepted": false, "reason": "candidate accuracy 0.962 < stable 0.989 - 0.005"}
# A version whose decision is not accepted is never promoted unless forced.
DECISION = "decision"
# TF Serving's warm-up records: a TFRecord file of PredictionLog, replayed when a version loads.
WARMUP_REQUESTS_PATH = Path("assets.extra") / "tf_serving_warmup_requests"


def version_of(directory_name: str) -> int | None:
    """The version a directory name stands for (`00000123` is 123), or None if it is not one."""
    if directory_name.isascii() and directory_name.isdigit() and int(directory_name) > 0:
        return int(directory_name)
    return None


def list_versions(model_base_path: Path) -> dict[int, Path]:
    """Every directory whose name is a version, complete or not, by version number."""
    if not model_base_path.is_dir():
        return {}
    versions = {}
    for entry in model_base_path.iterdir():
        version = version_of(entry.name)
        if version is not None and entry.is_dir():
            versions[version] = entry
    return versions


def is_complete(version_dir: Path) -> bool:
    return any((version_dir / name).is_file() for name in SAVED_MODEL_FILES)


def complete_versions(model_base_path: Path) -> dict[int, Path]:
    """The versions a server may load: those whose SavedModel is there."""
    return {v: path for v, path in list_versions(model_base_path).items() if is_complete(path)}


def models(repo: Path) -> list[str]:
    """Names of the repository's models that have at least one complete version, sorted."""
    if not repo.is_dir():
        return []
    return sorted(
        entry.name
        for entry in repo.iterdir()
        if entry.is_dir() and not entry.name.startswith(".") and complete_versions(entry)
    )


def read_metadata(version_dir: Path) -> dict | None:
    """The version's nnserve.json, or None when it has none (a SavedModel nnserve did not make).

    Raises OSError or ValueError when the file is there but cannot be read as a JSON object.
    """
    try:
        document = json.loads((version_dir / METADATA_PATH).read_text())
    except FileNotFoundError:
        return None
    if not isinstance(document, dict):
        raise ValueError(f"{version_dir / METADATA_PATH} holds no JSON object")
    return document


def rejection(metadata: dict | None) -> str | None:
    """Why the retraining gate rejected the version, or None if it did not (or never judged it)."""
    decision = (metadata or {}).get(DECISION)
    if decision is None:
        return None
    if isinstance(decision, dict) and decision.get("accepted") is True:
        return None
    # Anything but an explicit acceptance counts as a rejection: a garbled verdict is no pass.
    reason = decision.get("reason") if isinstance(decision, dict) else None
    return str(reason or f"its {DECISION} is {json.dumps(decision)}")


def publish(export_dir: Path, model_base_path: Path) -> int:
    """Copy a finished export into the repository as the next version, atomically.

    The copy is made under a name no server takes for a version, then renamed into place, so a
    server polling the repository sees either no new version or a complete one.
    """
    if not is_complete(export_dir):
        raise ValueError(f"{export_dir} is not a SavedModel: it has no saved_model.pb")
    model_base_path.mkdir(parents=True, exist_ok=True)
    staging = model_base_path / f".incoming-{uuid.uuid4().hex}"
    try:
        shutil.copytree(export_dir, staging)
        _fsync_tree(staging)
        while True:
            version = 1 + max(
                (v for v in map(version_of, os.listdir(model_base_path)) if v), default=0
            )
            target = model_base_path / str(version)
            try:
                os.rename(staging, target)
                return version
            except OSError:
                # Another publisher took this version between listing and renaming: take the next.
                if not target.exists():
                    raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
