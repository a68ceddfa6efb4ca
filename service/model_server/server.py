"""Start the gRPC server, serve until SIGTERM or SIGINT, then finish the calls in flight."""

import functools
import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow.core.protobuf import config_pb2
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from service import garbage_collection
from service.model_server.batching import BatchingParameters
from service.model_server.channel_arguments import DEFAULT_CHANNEL_ARGUMENTS, ChannelArguments
from service.model_server.config import ConfigError, read_config_file
from service.model_server.errors import ServingError
from service.model_server.grpc_api import ModelService, PredictionService
from service.model_server.limits import DEFAULT_GRPC_MAX_THREADS, FeedLimits
from service.model_server.manager import ModelConfig, ModelManager
from service.model_server.warmup import load_and_warm_up
from service.ports import PortInUseError

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 30


class StartupError(RuntimeError):
    """The server cannot start as configured; the message says why."""


@dataclass(frozen=True)
class ServerOptions:
    host: str = "0.0.0.0"
    port: int = 8500
    file_system_poll_wait_seconds: float = 1.0
    model_config_file: Path | None = None
    model_config_file_poll_wait_seconds: float = 0.0
    batching: BatchingParameters | None = None
    session_config: config_pb2.ConfigProto | None = None
    feed_limits: FeedLimits = field(default_factory=FeedLimits)
    allow_version_labels_for_unavailable_models: bool = False
    grpc_max_threads: int = DEFAULT_GRPC_MAX_THREADS
    grpc_channel_arguments: ChannelArguments = ()
    enable_grpc_healthcheck_service: bool = False


def build_server(
    manager: ModelManager,
    host: str,
    port: int,
    max_threads: int = DEFAULT_GRPC_MAX_THREADS,
    channel_arguments: ChannelArguments = (),
    health_check: bool = False,
) -> grpc.Server:
    arguments = dict(DEFAULT_CHANNEL_ARGUMENTS)
    arguments.update(channel_arguments)
    # gRPC sets SO_REUSEPORT by default, which would let a second server share a port silently.
    arguments["grpc.so_reuseport"] = 0
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="grpc"),
        options=list(arguments.items()),
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(manager), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), server)
    if health_check:
        health_servicer = health.HealthServicer()
        for service_name in (
            "",
            "tensorflow.serving.PredictionService",
            "tensorflow.serving.ModelService",
        ):
            health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{host}:{port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as error:
        raise PortInUseError(
            f"cannot listen on {address}: the port is in use or not available ({error})"
        ) from error
    return server


def new_manager(options: ServerOptions) -> ModelManager:
    return ModelManager(
        [],
        load=functools.partial(
            load_and_warm_up,
            batching=options.batching,
            session_config=options.session_config,
            feed_limits=options.feed_limits,
        ),
        allow_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
    )


def load_initial_models(manager: ModelManager, models: list[ModelConfig]) -> None:
    """Like TF Serving, refuse to start if a configured model fails to load."""
    try:
        manager.reload(models)
    except ServingError as error:
        raise StartupError(error.message) from error
    failed = [
        f"{{name: {name} version: {version} due to error: {message}}}"
        for name, versions in manager.failed_versions().items()
        for version, message in versions.items()
    ]
    if failed:
        raise StartupError(
            f"{len(failed)} servable(s) did not become available: {', '.join(failed)}"
        )


def serve(models: list[ModelConfig], options: ServerOptions) -> None:
    """Serve until SIGTERM or SIGINT; calls in flight get a grace period to finish."""
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    manager = new_manager(options)
    # Bound before loading: a taken port is reported before minutes of model loading.
    server = build_server(
        manager,
        options.host,
        options.port,
        options.grpc_max_threads,
        options.grpc_channel_arguments,
        # As TF Serving: grpc.health.v1 only when asked for (Kubernetes' gRPC probe asks).
        health_check=options.enable_grpc_healthcheck_service,
    )
    load_initial_models(manager, models)
    manager.start_polling(options.file_system_poll_wait_seconds)
    config_poller = _poll_config_file(manager, options, stopping)
    server.start()
    garbage_collection.tune_for_serving()
    log.info("model server listening on %s:%d", options.host, options.port)
    stopping.wait()
    log.info("stopping: finishing calls in flight")
    server.stop(SHUTDOWN_GRACE_SECONDS).wait()
    manager.stop()
    if config_poller is not None:
        config_poller.join()


def _poll_config_file(
    manager: ModelManager, options: ServerOptions, stopping: threading.Event
) -> threading.Thread | None:
    path, interval = options.model_config_file, options.model_config_file_poll_wait_seconds
    if path is None or interval <= 0:
        return None

    def poll() -> None:
        last = path.read_text()
        while not stopping.wait(interval):
            try:
                text = path.read_text()
                if text != last:
                    manager.reload(read_config_file(path))
                    last = text
                    log.info("reloaded model config from %s", path)
            except (OSError, ConfigError, ServingError) as error:
                log.error("Failed to reload ModelServerConfig file %s: %s", path, error)

    thread = threading.Thread(target=poll, name="config-poller", daemon=True)
    thread.start()
    return thread
