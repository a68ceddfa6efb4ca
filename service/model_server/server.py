"""Start the gRPC server, serve until SIGTERM or SIGINT, then finish the calls in flight."""

import logging
import signal
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from service.model_server.grpc_api import ModelService, PredictionService
from service.model_server.manager import ModelConfig, ModelManager
from service.ports import PortInUseError

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 30


def build_server(manager: ModelManager, host: str, port: int, max_workers: int = 16) -> grpc.Server:
    # gRPC sets SO_REUSEPORT by default, which would let a second server share a port silently.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers), options=[("grpc.so_reuseport", 0)]
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(manager), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{host}:{port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as error:
        raise PortInUseError(
            f"cannot listen on {address}: the port is in use or not available ({error})"
        ) from error
    return server


def serve(models: list[ModelConfig], host: str, port: int, poll_seconds: float) -> None:
    """Serve until SIGTERM or SIGINT; calls in flight get a grace period to finish."""
    manager = ModelManager(models)
    server = build_server(manager, host, port)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    manager.start_polling(poll_seconds)
    server.start()
    log.info("model server listening on %s:%d", host, port)
    stopping.wait()
    log.info("stopping: finishing calls in flight")
    server.stop(SHUTDOWN_GRACE_SECONDS).wait()
    manager.stop()
