"""`nnserve model-server` takes TF Serving's flags and, as TF Serving, refuses any other: a
misspelt flag in a deployment must stop the server, not be ignored."""

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import free_port

from service.cli import _parser
from service.model_server.__main__ import main as serving_main
from service.model_server.manager import ModelManager
from service.model_server.server import build_server


def model_server_flags(*flags: str):
    return _parser().parse_args(
        ["model-server", "--model_config_file=/models/models.config", *flags]
    )


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("--enable_grpc_healthcheck_service", True),
        ("--enable_grpc_healthcheck_service=true", True),
        ("--enable_grpc_healthcheck_service=false", False),
    ],
)
def test_healthcheck_flag_as_tf_serving_writes_it(flag, expected):
    assert model_server_flags(flag).enable_grpc_healthcheck_service is expected
    assert model_server_flags().enable_grpc_healthcheck_service is False


@pytest.mark.parametrize(
    "flag",
    [
        "--no_such_flag=1",
        # argparse would take a prefix of a known flag; TF Serving takes whole names only.
        "--model_config_file_poll=10",
        "--enable_grpc_health",
    ],
)
def test_unknown_and_abbreviated_flags_are_refused(flag, capsys):
    with pytest.raises(SystemExit) as refused:
        model_server_flags(flag)
    assert refused.value.code == 2
    assert flag in capsys.readouterr().err
    # The serving process parses the same flags again, as strictly.
    with pytest.raises(SystemExit):
        serving_main(["--model_config_file=/models/models.config", flag])


def test_the_serving_process_refuses_a_log_level_logging_does_not_know(capsys):
    with pytest.raises(SystemExit) as refused:
        serving_main(["--log-level=bogus", "--model_config_file=/models/models.config"])
    assert refused.value.code == 2
    assert "argument --log-level: invalid choice: 'BOGUS'" in capsys.readouterr().err


@pytest.mark.parametrize("enabled", [True, False])
def test_health_service_answers_only_when_enabled(enabled):
    port = free_port()
    server = build_server(ModelManager([]), "127.0.0.1", port, health_check=enabled)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            request = health_pb2.HealthCheckRequest(service="tensorflow.serving.PredictionService")
            if enabled:
                reply = check(request, timeout=10)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            else:
                with pytest.raises(grpc.RpcError) as error:
                    check(request, timeout=10)
                assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.stop(0)
