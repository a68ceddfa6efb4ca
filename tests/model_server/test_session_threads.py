"""TF Serving's session thread flags: --tensorflow_{session,intra_op,inter_op}_parallelism."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from support import refused_start, serving_pid
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from service.model_server.manager import ModelConfig
from service.model_server.servable import session_config
from service.model_server.server import ServerOptions, new_manager


@pytest.mark.parametrize(
    ("session", "intra_op", "inter_op", "expected"),
    [
        ((0, 0, 0), 0, 0, "TensorFlow chooses both"),
        ((4, 0, 0), 4, 4, "session parallelism sets both"),
        ((4, 2, 0), 2, 0, "intra-op set: the pair wins over session parallelism"),
        ((0, 1, -1), 1, -1, "negative inter-op: ops run on the calling thread"),
        ((4, 0, -1), 4, 4, "a negative inter-op alone is not 'set' (TF Serving's > 0 test)"),
    ],
)
def test_flags_map_to_threads_as_tf_serving_maps_them(session, intra_op, inter_op, expected):
    config = session_config(*session)
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (
        intra_op,
        inter_op,
    ), expected


def test_all_three_flags_at_once_are_refused(half_plus_two):
    stderr = refused_start(
        "model-server",
        "--port=0",
        f"--model_base_path={half_plus_two}",
        "--tensorflow_session_parallelism=2",
        "--tensorflow_intra_op_parallelism=1",
        "--tensorflow_inter_op_parallelism=1",
    )
    assert "You cannot configure all." in stderr


def test_a_thread_count_beyond_32_bits_is_refused(half_plus_two):
    stderr = refused_start(
        "model-server",
        "--port=0",
        f"--model_base_path={half_plus_two}",
        f"--tensorflow_intra_op_parallelism={2**31}",
    )
    flag = "--tensorflow_intra_op_parallelism (or --tensorflow_session_parallelism)"
    assert f"{flag} is {2**31}; a session takes a 32-bit thread count" in stderr


def test_every_loaded_version_runs_in_a_session_so_configured(half_plus_two):
    config = session_config(0, 1, -1)
    manager = new_manager(ServerOptions(session_config=config))
    manager.reload([ModelConfig("m", half_plus_two)])
    spec = predict_pb2.PredictRequest().model_spec
    spec.name = "m"
    with manager.lease(spec) as (_, servable):
        assert servable.session_config == config
        answer = servable.run("", {"x": np.array([[1.0], [4.0]], np.float32)})
    # A session that runs its ops on the calling thread answers as any other.
    assert answer["y"].tolist() == [[2.5], [4.0]]
    manager.stop()


def _threads_named(pid: int, name: str) -> int:
    return sum(
        (task / "comm").read_text().strip() == name for task in Path(f"/proc/{pid}/task").iterdir()
    )


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="counts threads through /proc")
def test_session_parallelism_sets_the_servers_compute_threads(half_plus_two, model_server_process):
    """TensorFlow names its intra-op pool's threads tf_Compute; the session is the only one in
    the server, so their number is what the flag asked for."""
    with model_server_process(
        "--model_name=m", f"--model_base_path={half_plus_two}", "--tensorflow_session_parallelism=5"
    ) as (server, channel):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "m"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[2.0]], np.float32)))
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request)
        assert tf.make_ndarray(response.outputs["y"]).tolist() == [[3.0]]
        assert _threads_named(serving_pid(server), "tf_Compute") == 5
