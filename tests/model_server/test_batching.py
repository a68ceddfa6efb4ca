"""--enable_batching: concurrent calls share runs and get the answers they would get alone."""

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tensorflow as tf
from support import REPO_ROOT, SHARED_TESTDATA
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from service.model_server.batching import Batcher, BatchingParameters, read_batching_parameters
from service.model_server.errors import ServingError
from service.model_server.manager import ModelConfig, ModelManager
from service.model_server.warmup import load_and_warm_up

KEY = (("x:0",), ("y:0",))


class CountingModel:
    """y = 2x + 1, counting the runs it is asked for and the rows in each."""

    def __init__(self) -> None:
        self.batch_rows: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, key, values):
        with self.lock:
            self.batch_rows.append(len(values[0]))
        return [values[0] * 2 + 1]


def run_concurrently(batcher: Batcher, inputs: list[np.ndarray]) -> list[np.ndarray]:
    with ThreadPoolExecutor(len(inputs)) as pool:
        return list(pool.map(lambda x: batcher.submit(KEY, [x])[0], inputs))


def test_concurrent_tasks_share_runs_and_get_their_own_rows_back():
    model = CountingModel()
    batcher = Batcher(
        BatchingParameters(max_batch_size=64, batch_timeout_micros=200_000, num_batch_threads=1),
        model,
    )
    inputs = [np.full((rows, 3), float(i), np.float32) for i, rows in enumerate([1, 2, 3] * 5)]
    try:
        outputs = run_concurrently(batcher, inputs)
    finally:
        batcher.close()
    for x, y in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(y, x * 2 + 1)
    assert sum(model.batch_rows) == sum(len(x) for x in inputs)
    assert len(model.batch_rows) < len(inputs)
    assert max(model.batch_rows) <= 64


def test_a_full_batch_runs_without_waiting_for_the_timeout():
    model = CountingModel()
    # With a timeout of an hour, only reaching max_batch_size can start the run.
    batcher = Batcher(
        BatchingParameters(
            max_batch_size=4, batch_timeout_micros=3_600_000_000, num_batch_threads=1
        ),
        model,
    )
    try:
        outputs = run_concurrently(batcher, [np.ones((1, 1), np.float32)] * 4)
    finally:
        batcher.close()
    assert model.batch_rows == [4] and len(outputs) == 4


def test_allowed_batch_sizes_pad_the_batch_and_the_padding_is_dropped():
    model = CountingModel()
    parameters = BatchingParameters(
        max_batch_size=8, allowed_batch_sizes=(4, 8), num_batch_threads=1
    )
    batcher = Batcher(parameters, model)
    try:
        (y,) = batcher.submit(KEY, [np.arange(3, dtype=np.float32).reshape(3, 1)])
    finally:
        batcher.close()
    assert model.batch_rows == [4]
    assert y.ravel().tolist() == [1.0, 3.0, 5.0]


class GatedModel(CountingModel):
    """A CountingModel whose runs wait for `gate`, noting the threads they run on and how many
    run at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.threads: list[str] = []
        self.running = 0
        self.most_running = 0

    def __call__(self, key, values):
        with self.lock:
            self.threads.append(threading.current_thread().name)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        self.gate.wait(timeout=60)
        with self.lock:
            self.running -= 1
        return super().__call__(key, values)


def wait_for_queued(batcher: Batcher, count: int) -> None:
    for _ in range(3000):
        if batcher.queued_tasks() == count:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"{batcher.queued_tasks()} tasks queued, expected {count}")


def test_without_a_timeout_a_lone_task_runs_on_its_callers_thread():
    model = GatedModel()
    model.gate.set()
    batcher = Batcher(
        BatchingParameters(max_batch_size=8, batch_timeout_micros=0, num_batch_threads=1), model
    )
    try:
        (y,) = batcher.submit(KEY, [np.ones((2, 1), np.float32)])
    finally:
        batcher.close()
    assert model.threads == [threading.current_thread().name]
    assert y.ravel().tolist() == [3.0, 3.0]


@pytest.mark.parametrize("threads", [1, 2])
def test_tasks_that_find_every_batch_thread_busy_wait_and_share_the_next_batch(threads):
    model = GatedModel()
    batcher = Batcher(
        BatchingParameters(max_batch_size=8, batch_timeout_micros=0, num_batch_threads=threads),
        model,
    )
    try:
        with ThreadPoolExecutor(threads + 3) as pool:
            busy = [pool.submit(batcher.submit, KEY, [np.ones((1, 1))]) for _ in range(threads)]
            # Once as many batches run as there are batch threads, later tasks queue up.
            for _ in range(3000):
                if model.running == threads:
                    break
                threading.Event().wait(0.01)
            waiting = [pool.submit(batcher.submit, KEY, [np.ones((1, 1))]) for _ in range(3)]
            wait_for_queued(batcher, 3)
            model.gate.set()
            outputs = [call.result(timeout=60) for call in busy + waiting]
    finally:
        batcher.close()
    assert len(outputs) == threads + 3
    assert model.most_running == threads
    # Rows per batch in the order the batches finished, which the gate leaves to the scheduler.
    assert sorted(model.batch_rows) == [1] * threads + [3]


@pytest.mark.parametrize(
    ("values", "code", "message"),
    [
        (
            [np.ones((2, 1)), np.ones((3, 1))],
            grpc.StatusCode.INVALID_ARGUMENT,
            "Batching Run() input tensors must have equal 0th-dimension size",
        ),
        (
            [np.float32(1)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "Batching Run() input tensors must have at least one dimension",
        ),
        (
            [np.ones((9, 1))],
            grpc.StatusCode.INVALID_ARGUMENT,
            "Task size 9 is larger than maximum input batch size 8",
        ),
    ],
    ids=["unequal-rows", "scalar", "too-large"],
)
def test_tasks_that_cannot_be_batched_are_refused(values, code, message):
    batcher = Batcher(BatchingParameters(max_batch_size=8, num_batch_threads=1), CountingModel())
    try:
        with pytest.raises(ServingError) as caught:
            batcher.submit((("a:0", "b:0")[: len(values)], ("y:0",)), values)
    finally:
        batcher.close()
    assert (caught.value.code, caught.value.message) == (code, message)


def test_tasks_of_different_shapes_fail_their_batch_with_tf_servings_message():
    batcher = Batcher(
        BatchingParameters(max_batch_size=8, batch_timeout_micros=500_000, num_batch_threads=1),
        CountingModel(),
    )
    try:
        with ThreadPoolExecutor(2) as pool:
            calls = [pool.submit(batcher.submit, KEY, [np.ones((1, width))]) for width in (2, 3)]
            errors = [call.exception(timeout=30) for call in calls]
    finally:
        batcher.close()
    assert all(isinstance(error, ServingError) for error in errors)
    assert "Tensors with name 'x:0' from different tasks have different shapes" in errors[0].message


def test_batching_parameters_file_is_read_as_tf_serving_reads_it(tmp_path):
    path = tmp_path / "batching.config"
    path.write_text(
        "max_batch_size { value: 16 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 16\n"
    )
    parameters = read_batching_parameters(path)
    assert (parameters.max_batch_size, parameters.allowed_batch_sizes) == (16, (8, 16))
    assert parameters.max_enqueued_batches == 10  # TF Serving's default
    path.write_text("max_batch_size { value: 16 }\nallowed_batch_sizes: 8\n")
    with pytest.raises(ValueError, match="Last entry in allowed_batch_sizes must match"):
        read_batching_parameters(path)
    path.write_text("max_batch_sise { value: 16 }")
    with pytest.raises(ValueError, match="Error parsing text-format"):
        read_batching_parameters(path)
    shared = SHARED_TESTDATA / "batching_config.txt"
    if shared.exists():
        assert read_batching_parameters(shared).num_batch_threads == 8


def test_every_shipped_spec_has_a_batching_recipe_the_model_server_reads():
    specs = REPO_ROOT / "pipeline" / "specs"
    recipes = {path.stem: path for path in (specs / "batching").glob("*.txt")}
    assert sorted(recipes) == sorted(path.stem for path in specs.glob("*.yaml"))
    for name, path in recipes.items():
        parameters = read_batching_parameters(path)
        assert parameters.max_batch_size >= 1, name


def test_a_batching_server_answers_exactly_as_an_unbatched_one(trained_digits, serve):
    model = ModelConfig("digits", trained_digits.version_dir.parent)
    parameters = BatchingParameters(max_batch_size=32, batch_timeout_micros=20_000)
    rng = np.random.default_rng(0)
    images = [
        rng.uniform(0, 16, (int(n), 8, 8, 1)).astype(np.float32) for n in rng.integers(1, 5, 40)
    ]

    def answers(manager: ModelManager) -> list[np.ndarray]:
        with serve(manager) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

            def predict(batch: np.ndarray) -> np.ndarray:
                request = predict_pb2.PredictRequest()
                request.model_spec.name = "digits"
                request.inputs["image"].CopyFrom(tf.make_tensor_proto(batch))
                return tf.make_ndarray(stub.Predict(request, timeout=60).outputs["probabilities"])

            with ThreadPoolExecutor(16) as pool:
                return list(pool.map(predict, images))

    batched = answers(ModelManager([model], load=lambda path: load_and_warm_up(path, parameters)))
    unbatched = answers(ModelManager([model]))
    for one, other in zip(batched, unbatched, strict=True):
        np.testing.assert_allclose(one, other, rtol=1e-5, atol=1e-6)
