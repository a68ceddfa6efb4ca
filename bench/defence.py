"""What the model server's two lines of defence against crashing requests cost.

Run by hand (not in the test suite), from the repository root, with a trained digits model:

    .venv/bin/python bench/defence.py [--model-base-path models/digits-cnn] [--rounds 3]

First line (service/model_server/feeds.py): each Predict tensor is checked against the signature
before it is decoded, and a shape the signature does not declare is put to the graph's shape
inference once (then cached).
- per request: checking and decoding the digits model's one-image request, against decoding
  alone, in process, beside one session run of the model;
- per new undeclared shape: importing the graph for shape inference, for the digits CNN and for
  Keras's ResNet50 architecture (built here with weights=None: nothing is downloaded).

Second line (service/model_server/supervisor.py): `nnserve model-server` serves from a child
process and starts it again if it dies.
- the supervisor's resident memory;
- start to first answer and requests/s at concurrency 8, `nnserve model-server` against the same
  serving process started alone (`python -m service.model_server`), in interleaved rounds;
- recovery: from SIGABRT of the serving process to its next answer.

The alternative not taken, TensorFlow's default kernels instead of oneDNN's
(TF_ENABLE_ONEDNN_OPTS=0 for the serving process: they refuse the inputs some oneDNN kernels
abort on): one session run of the digits CNN and of ResNet50, each setting in a process of its
own, in interleaved rounds.
"""

import argparse
import functools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.model_server import drive, image
from bench.processes import child_pids, cpu_seconds, free_port, rss_mb
from service.model_server import feeds
from service.model_server.graph_shapes import GraphShapes
from service.model_server.limits import FeedLimits
from service.model_server.servable import SavedModelServable
from service.model_server.tensors import to_array

CALLS = 2000


def per_call_us(call, calls: int = CALLS) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1e6


def first_line_per_request(version_dir: Path, rounds: int) -> dict[str, float]:
    servable = SavedModelServable(version_dir)
    signature = servable.signature("")
    tensors = {"image": tf.make_tensor_proto(image())}
    limits = FeedLimits()
    checked = functools.partial(
        feeds.decode_inputs, "serving_default", signature, tensors, limits, servable.graph_shapes
    )

    def decoded() -> dict:
        return {name: to_array(name, tensor, (1, 8, 8, 1)) for name, tensor in tensors.items()}

    run = functools.partial(servable.run, "", {"image": image()})
    run()
    results: dict[str, list[float]] = {"check and decode": [], "decode alone": [], "run": []}
    for _ in range(rounds):
        results["check and decode"].append(per_call_us(checked))
        results["decode alone"].append(per_call_us(decoded))
        results["run"].append(per_call_us(run, CALLS // 10))
    return {name: statistics.median(values) for name, values in results.items()}


def meta_graph(version_dir: Path):
    saved_model = saved_model_pb2.SavedModel.FromString(
        (version_dir / "saved_model.pb").read_bytes()
    )
    return saved_model.meta_graphs[0]


def shape_check_ms(version_dir: Path, shape: tuple, rounds: int) -> tuple[float, float]:
    """(ms of a first check, ms of a cached one) of an undeclared shape for the only input."""
    graph = meta_graph(version_dir)
    (alias,) = graph.signature_def["serving_default"].inputs
    first, cached = [], []
    for _ in range(rounds):
        checker = GraphShapes(graph)
        started = time.perf_counter()
        reason = checker.refusal("serving_default", {alias: shape})
        first.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        checker.refusal("serving_default", {alias: shape})
        cached.append((time.perf_counter() - started) * 1000)
    assert reason is not None, f"{shape} was expected to be refused"
    return statistics.median(first), statistics.median(cached)


def resnet50(scratch: Path) -> Path:
    import keras

    model = keras.applications.ResNet50(weights=None)
    path = scratch / "resnet50" / "1"
    model.export(str(path), verbose=False)
    return path


def predict_request() -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digits"
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(image()))
    return request


def answers(address: str, request: predict_pb2.PredictRequest) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=5)
        except grpc.RpcError:
            return False
    return True


def wait_for_answer(
    address: str, request, process: subprocess.Popen, timeout: float = 300
) -> float:
    started = time.perf_counter()
    while not answers(address, request):
        if process.poll() is not None or time.perf_counter() - started > timeout:
            raise SystemExit(f"the model server did not answer (exit status {process.poll()})")
        time.sleep(0.05)
    return time.perf_counter() - started


def start(supervised: bool, base_path: Path) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    entry = ["service.cli", "model-server"] if supervised else ["service.model_server"]
    flags = ["--host=127.0.0.1", f"--port={port}", "--model_name=digits"]
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", *entry, *flags, f"--model_base_path={base_path}"],
        stderr=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"
    wait_for_answer(address, predict_request(), process)
    return process, address, time.perf_counter() - started


def throughput(address: str, pid: int, seconds: float) -> tuple[float, float]:
    """(requests/s, CPU ms per request of the process tree) at concurrency 8."""
    with grpc.insecure_channel(address) as channel:
        call = functools.partial(
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict, predict_request()
        )
        drive(call, 8, 1.0)
        before = cpu_seconds(pid, descendants=True)
        rate, latencies = drive(call, 8, seconds)
        return rate, (cpu_seconds(pid, descendants=True) - before) * 1000 / len(latencies)


def second_line(base_path: Path, rounds: int, seconds: float) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    for _ in range(rounds):
        for supervised in (True, False):
            label = "supervised" if supervised else "alone"
            process, address, start_seconds = start(supervised, base_path)
            try:
                rate, cpu_ms = throughput(address, process.pid, seconds)
                results.setdefault(f"{label} start s", []).append(start_seconds)
                results.setdefault(f"{label} requests/s", []).append(rate)
                results.setdefault(f"{label} CPU ms/request", []).append(cpu_ms)
                if supervised:
                    results.setdefault("supervisor RSS MB", []).append(rss_mb(process.pid))
                    results.setdefault("whole tree RSS MB", []).append(
                        rss_mb(process.pid, descendants=True)
                    )
                    (serving,) = child_pids(process.pid)
                    os.kill(serving, signal.SIGABRT)
                    recovery = wait_for_answer(address, predict_request(), process)
                    results.setdefault("recovery after SIGABRT s", []).append(recovery)
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(90)
    return results


def session_run_ms(version_dir: Path, batch: int, calls: int) -> float:
    """Median ms of one session run on `batch` examples of zeros, in this process."""
    servable = SavedModelServable(version_dir)
    (alias, info), *_ = servable.signature("").inputs.items()
    shape = [batch, *(dim.size for dim in info.tensor_shape.dim[1:])]
    inputs = {alias: np.zeros(shape, tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)}
    for _ in range(3):
        servable.run("", inputs)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        servable.run("", inputs)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def onednn_comparison(runs: list[tuple[str, Path, int, int]], rounds: int) -> None:
    """(name, SavedModel version, batch size, calls) for each comparison."""
    print("\nThe alternative: TensorFlow's default kernels (session run ms, oneDNN on / off):")
    for name, version_dir, batch, calls in runs:
        by_setting: dict[str, list[float]] = {"1": [], "0": []}
        for _ in range(rounds):
            for setting, times in by_setting.items():
                command = [sys.executable, __file__, "--time-run", str(version_dir)]
                output = subprocess.run(
                    [*command, "--batch", str(batch), "--calls", str(calls)],
                    env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": setting},
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                times.append(float(output.split()[-1]))
        on, off = statistics.median(by_setting["1"]), statistics.median(by_setting["0"])
        print(f"  {name}, batch {batch}: {on:.2f} / {off:.2f} ms: off takes {off / on:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base-path", type=Path, default=Path("models/digits-cnn"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    # Internal: one setting's session-run timing, in a process of its own.
    parser.add_argument("--time-run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=200, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.time_run:
        print(session_run_ms(args.time_run, args.batch, args.calls))
        return
    base = args.model_base_path.resolve()
    latest = max((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))

    print(f"{base.name} version {latest.name}; {args.rounds} rounds, medians\n")
    per_request = first_line_per_request(latest, args.rounds)
    added = per_request["check and decode"] - per_request["decode alone"]
    print("First line, per request (in process, one 8x8 image):")
    for name, micros in per_request.items():
        print(f"  {name}: {micros:.1f} us")
    print(f"  check added: {added:.1f} us = {added / per_request['run']:.1%} of one session run\n")

    with tempfile.TemporaryDirectory() as scratch:
        checks = {
            "digits CNN, [-1, 8, 8] for [-1, 8, 8, 1]": (latest, (None, 8, 8)),
            "ResNet50, [-1, 224, 224] for [-1, 224, 224, 3]": (
                resnet50(Path(scratch)),
                (None, 224, 224),
            ),
        }
        print("First line, per new undeclared shape (graph import for shape inference):")
        for name, (version_dir, shape) in checks.items():
            first, cached = shape_check_ms(version_dir, shape, args.rounds)
            print(f"  {name}: first {first:.1f} ms, cached {cached * 1000:.1f} us")
        resnet_dir = checks["ResNet50, [-1, 224, 224] for [-1, 224, 224, 3]"][0]
        onednn_comparison(
            [
                ("digits CNN", latest, 1, 500),
                ("ResNet50", resnet_dir, 1, 20),
                ("ResNet50", resnet_dir, 8, 5),
            ],
            args.rounds,
        )

    print("\nSecond line (nnserve model-server vs the serving process alone):")
    for name, values in second_line(base, args.rounds, args.seconds).items():
        rounded = ", ".join(f"{value:.2f}" for value in values)
        print(f"  {name}: median {statistics.median(values):.2f} ({rounded})")


if __name__ == "__main__":
    main()
