"""`nnserve up`: train the demo model if the repository has none, then run model server and gateway.

Both serve every model of the model config file, the record of what is served
(service/serving_config.py), made or extended from the repository: a model on disk that the file
lacks is added with its newest version stable. `nnserve promote` and `nnserve rollback` change it
while `up` runs. With `--models`, both serve only the models named (and the spec's) from a view of
the record that `up` keeps in step with it (service/served_view.py); the record keeps the other
models' entries and labels.

Each part runs in its own process, as it would in a deployment: training and the model server load
TensorFlow, the gateway does not.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import pipeline
from pipeline.dataset_files import DatasetError, check_files
from pipeline.spec import SpecError, load_spec
from service import console, docker_model_server, model_repository, served_view, serving_config
from service.console import OVERALL
from service.ports import ensure_free
from service.processes import dies_with_parent
from service.settings import get_settings

DEFAULT_SPEC = Path(pipeline.__file__).parent / "specs" / "digits-cnn.yaml"
HOST = "127.0.0.1"
READY_TIMEOUT_SECONDS = 180
STOP_TIMEOUT_SECONDS = 30


class UpError(RuntimeError):
    pass


def run(
    spec_path: Path,
    grpc_port: int,
    http_port: int,
    engine: str = "auto",
    verbose: bool = False,
    models: Collection[str] | None = None,
) -> int:
    """`models`: serve only these and the spec's model (None: every model)."""
    try:
        spec = load_spec(spec_path)
        check_files(spec.dataset)
    except (SpecError, DatasetError) as error:
        raise UpError(str(error)) from error
    for port in (grpc_port, http_port):
        ensure_free(HOST, port)
    settings = get_settings()
    repo = settings.model_repo.absolute()
    config_file = settings.serving_config_file().absolute()
    chosen = None if models is None else _chosen(models, spec.name, repo, config_file)
    # Chosen before any training, so that a missing engine or image is said at once.
    docker = _docker_engine(engine, settings.tfserving_image)
    if not model_repository.complete_versions(repo / spec.name):
        print(f"no version of {spec.name} in {repo}: training it first", flush=True)
        # Promoted at the address the model server will have: nothing answers there yet, so
        # the version is made stable in the model config in one step.
        address = {"NNSERVE_TFSERVING_ADDR": f"{HOST}:{grpc_port}"}
        train = _nnserve("train", str(spec_path), "--progress", OVERALL, *_verbose(verbose))
        if subprocess.call(train, env={**os.environ, **address}) != 0:
            raise UpError(f"training {spec.name} failed; see the output above")
    served = _serving_record(config_file, repo, spec.name, chosen)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with contextlib.ExitStack() as cleanup:
        served_config = _served_config(cleanup, config_file, grpc_port, chosen)
        print(f"starting the model server and the gateway on {HOST}", flush=True)
        # Their logs at WARNING unless asked for more: no request log of the readiness checks.
        logs = {} if not console.is_quiet(verbose) else {"NNSERVE_LOG_LEVEL": "WARNING"}
        if docker:
            model_server = docker_model_server.ModelServerContainer.start(
                docker, settings.tfserving_image, grpc_port, served_config, repo
            )
            print(
                f"model server: container {model_server.name} of {settings.tfserving_image}",
                flush=True,
            )
        else:
            model_server = _start(
                "model-server",
                "--host",
                HOST,
                f"--port={grpc_port}",
                f"--model_config_file={served_config}",
                # Promotions and rollbacks (`nnserve promote`, `rollback`) take effect within 1 s.
                "--model_config_file_poll_wait_seconds=1",
                # As TF Serving, a server starts from a config with version labels only with this.
                "--allow_version_labels_for_unavailable_models=true",
                env=logs,
            )
        gateway = _start(
            "gateway",
            "--host",
            HOST,
            "--port",
            str(http_port),
            env={
                "NNSERVE_TFSERVING_ADDR": f"{HOST}:{grpc_port}",
                "NNSERVE_MODEL_CONFIG_FILE": str(served_config),
                **logs,
            },
        )
        # Stopped in this order: the gateway stops taking requests before its backend goes away.
        children = {"gateway": gateway, "model server": model_server}
        try:
            gateway_url = f"http://{HOST}:{http_port}"
            _wait_until_ready(gateway_url, children, stop)
            if stop.is_set():
                return 0
            _print_banner(served, spec.name, chosen is not None, grpc_port, gateway_url)
            while not stop.wait(0.5):
                if _any_died(children):
                    raise UpError(_died(children))
            print("\nstopping gateway and model server", flush=True)
            return 0
        finally:
            _stop_all(children)
            if docker:
                model_server.remove()


def _docker_engine(engine: str, image: str):
    """The Docker client to run the model server with, or None for the embedded one: `auto`
    takes Docker where an engine answers and has the image, `docker` insists on it."""
    if engine == "embedded":
        return None
    try:
        client = docker_model_server.engine()
        docker_model_server.check_image(client, image)
    except docker_model_server.DockerEngineError as error:
        if engine == "docker":
            raise UpError(str(error)) from error
        print(f"model server: embedded, as {error}", flush=True)
        return None
    return client


@dataclass(frozen=True)
class ServedModel:
    name: str
    stable: int
    base_path: Path


def _chosen(names: Collection[str], spec_model: str, repo: Path, config_file: Path) -> frozenset:
    """The models `--models` names and the spec's model (which `up` trains when missing); a
    name that neither the repository nor the record holds is refused."""
    try:
        record = serving_config.read(config_file, missing_ok=True)
    except serving_config.ServingConfigError as error:
        raise UpError(str(error)) from error
    held = set(model_repository.models(repo))
    held.update(item.name for item in record.model_config_list.config)
    unknown = sorted(set(names) - held - {spec_model})
    if unknown:
        raise UpError(
            f"--models: no model named {', '.join(unknown)} in the model repository {repo} or "
            f"its model config; models there: {', '.join(sorted(held)) or 'none'}"
        )
    return frozenset(names) | {spec_model}


def _serving_record(
    config_file: Path, repo: Path, model: str, chosen: frozenset | None
) -> list[ServedModel]:
    """The models served from the model config (those of `chosen`, or all), with every model of
    the repository it lacks (of `chosen`, or all) added (its newest version stable; the file is
    made if missing). `model` (the spec's) must have a stable version."""
    try:
        serving_config.add_missing_models(config_file, repo, model_server=None, only=chosen)
        config = serving_config.read(config_file)
    except serving_config.ServingConfigError as error:
        raise UpError(str(error)) from error
    if serving_config.STABLE not in serving_config.labels(config, model):
        raise UpError(
            f"{config_file} gives {model} no stable version: "
            f"`nnserve promote {model} VERSION` chooses one"
        )
    if chosen is not None:
        config = serving_config.only_models(config, chosen)
    return [
        ServedModel(item.name, item.version_labels[serving_config.STABLE], Path(item.base_path))
        for item in sorted(config.model_config_list.config, key=lambda item: item.name)
        if serving_config.STABLE in item.version_labels
    ]


def _served_config(
    cleanup: contextlib.ExitStack, config_file: Path, grpc_port: int, chosen: frozenset | None
) -> Path:
    """The model config the model server and the gateway read: the record itself, or with
    `--models` a view of it, which `cleanup` removes."""
    view = served_view.path_for(config_file, grpc_port)
    if chosen is None:
        # One left by an `up --models` on this port that was killed would tell `nnserve
        # promote` that this model server serves only the models it names.
        view.unlink(missing_ok=True)
        return config_file
    try:
        return cleanup.enter_context(served_view.mirrored(config_file, view, chosen))
    except serving_config.ServingConfigError as error:
        raise UpError(str(error)) from error


def _verbose(verbose: bool) -> tuple[str, ...]:
    return ("--verbose",) if verbose else ()


def _nnserve(*args: str) -> list[str]:
    return [sys.executable, "-m", "service.cli", *args]


def _start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    # A session of its own: Ctrl-C reaches only this supervisor, which stops the parts in order.
    return subprocess.Popen(
        _nnserve(*args),
        env={**os.environ, **(env or {})},
        start_new_session=True,
        preexec_fn=dies_with_parent(signal.SIGTERM),
    )


def _wait_until_ready(
    gateway_url: str, children: dict[str, subprocess.Popen], stop: threading.Event
) -> None:
    """Until the gateway's /readyz says every model of the config is AVAILABLE."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    states: dict[str, str] = {}
    while not stop.is_set():
        if _any_died(children):
            raise UpError(_died(children))
        ready, states = _readiness(f"{gateway_url}/readyz", states)
        if ready:
            return
        if time.monotonic() > deadline:
            waiting = ", ".join(f"{name} {state}" for name, state in sorted(states.items()))
            raise UpError(
                f"not every model of the model config was AVAILABLE through {gateway_url} "
                f"within {READY_TIMEOUT_SECONDS} s: {waiting or 'no answer from the gateway'}"
            )
        stop.wait(0.25)


def _readiness(readyz_url: str, last: dict[str, str]) -> tuple[bool, dict[str, str]]:
    """Whether the gateway is ready, and the state of each model it reports (else `last`)."""
    try:
        with urllib.request.urlopen(readyz_url, timeout=2) as response:
            return True, json.load(response)["models"]
    except urllib.error.HTTPError as error:  # 503 while a model is not AVAILABLE yet
        try:
            return False, json.load(error)["models"]
        except (ValueError, KeyError):
            return False, last
    except (OSError, ValueError, KeyError):
        return False, last


def _print_banner(
    served: list[ServedModel], spec_model: str, chosen: bool, grpc_port: int, gateway_url: str
) -> None:
    width = max(len(model.name) for model in served)
    listing = "".join(
        f"  {model.name:<{width}}  version {model.stable} (stable)\n" for model in served
    )
    shown = next(model for model in served if model.name == spec_model)
    what = (
        "the models --models chose of the model config" if chosen else "what the model config lists"
    )
    example = shown.base_path / str(shown.stable) / "assets.extra" / "example_request.json"
    print(
        f"\nnnserve is up, serving {what}:\n{listing}"
        f"  model server (gRPC, TensorFlow Serving API): {HOST}:{grpc_port}\n"
        f"  gateway (HTTP):                              {gateway_url}\n\n"
        f"Predict:\n"
        f"  curl -s -X POST {gateway_url}/v1/models/{spec_model}:predict \\\n"
        f"       -H 'Content-Type: application/json' -d @{example}\n\n"
        f"Press Ctrl-C to stop.",
        flush=True,
    )


def _any_died(children: dict[str, subprocess.Popen]) -> bool:
    return any(child.poll() is not None for child in children.values())


def _died(children: dict[str, subprocess.Popen]) -> str:
    dead = [
        f"{name} (exit code {child.returncode})"
        for name, child in children.items()
        if child.poll() is not None
    ]
    return f"{', '.join(dead)} stopped unexpectedly; see its output above"


def _stop_all(children: dict[str, subprocess.Popen]) -> None:
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
