"""Benchmark `nnserve model-server`: Predict on the digits CNN with TF Serving's official stubs.

Run by hand (not in the test suite), from the repository root:

    .venv/bin/python bench/model_server.py [--model-base-path models/digits-cnn] [--seconds 10] \
        [--intra-op N --inter-op N]

For concurrency 1, 8 and 32 it drives a server with batching off and one with batching on, each
a real subprocess on 127.0.0.1, and reports requests/s, p50 and p99 beside the in-process
SavedModel call (the ceiling). Each request carries one 8x8 image, as a single client would send.
--intra-op and --inter-op are passed to the server as --tensorflow_intra_op_parallelism and
--tensorflow_inter_op_parallelism, and the in-process call's session gets the same threads.
"CPU ms per request" is the serving process's CPU time (all threads) over the requests answered:
the in-process rows count this process, the server rows the server's.
"""

import argparse
import functools
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.processes import cpu_seconds, free_port
from service.model_server.servable import SavedModelServable, session_config

CONCURRENCY = (1, 8, 32)
BATCHING = "max_batch_size { value: 32 } batch_timeout_micros { value: 2000 } num_batch_threads { value: 2 } max_enqueued_batches { value: 1000 }"  # noqa: E501


def image() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 16, (1, 8, 8, 1)).astype(np.float32)


def drive(call, concurrency: int, seconds: float) -> tuple[float, list[float]]:
    """Calls `call` from `concurrency` threads for `seconds`; returns requests/s and latencies."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    deadline = time.perf_counter() + seconds

    def worker(mine: list[float]) -> None:
        while (start := time.perf_counter()) < deadline:
            call()
            mine.append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker, args=(mine,)) for mine in latencies]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    flat = [latency for mine in latencies for latency in mine]
    return len(flat) / elapsed, flat


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def serve(
    model_base_path: Path, batching_file: Path | None, session_flags: list[str]
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "service.cli",
        "model-server",
        "--host=127.0.0.1",
        f"--port={port}",
        "--model_name=digits",
        f"--model_base_path={model_base_path}",
        *session_flags,
    ]
    if batching_file:
        args += ["--enable_batching", f"--batching_parameters_file={batching_file}"]
    process = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=300)
    return process, address


Cell = tuple[float, list[float], float]  # requests/s, latencies (s), CPU ms per request


def with_cpu(measure, pid: int | str = "self") -> Cell:
    """`measure()` -> (requests/s, latencies), plus the CPU ms per request `pid` spent on it."""
    descendants = pid != "self"  # the model server serves from a child process
    before = cpu_seconds(pid, descendants)
    rate, latencies = measure()
    return rate, latencies, (cpu_seconds(pid, descendants) - before) * 1000 / len(latencies)


def bench_server(address: str, pid: int, seconds: float) -> dict[int, Cell]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digits"
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(image()))
    with grpc.insecure_channel(address) as channel:
        call = functools.partial(
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict, request
        )
        drive(call, 4, 1.0)  # warm the connection and the graph
        return {c: with_cpu(functools.partial(drive, call, c, seconds), pid) for c in CONCURRENCY}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base-path", type=Path, default=Path("models/digits-cnn"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--intra-op", type=int, default=0, help="session intra-op threads")
    parser.add_argument("--inter-op", type=int, default=0, help="session inter-op threads")
    args = parser.parse_args()
    session_flags = [
        f"--tensorflow_intra_op_parallelism={args.intra_op}",
        f"--tensorflow_inter_op_parallelism={args.inter_op}",
    ]
    base = args.model_base_path.resolve()
    latest = max((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))

    servable = SavedModelServable(
        latest, session_config=session_config(0, args.intra_op, args.inter_op)
    )
    inputs = {"image": image()}
    servable.run("", inputs)
    call = functools.partial(servable.run, "", inputs)
    in_process = {c: with_cpu(functools.partial(drive, call, c, args.seconds)) for c in CONCURRENCY}

    rows = {"in-process SavedModel call": in_process}
    with tempfile.TemporaryDirectory() as scratch:
        batching_file = Path(scratch) / "batching.config"
        batching_file.write_text(BATCHING)
        for label, batching in (
            ("model server, batching off", None),
            ("model server, batching on", batching_file),
        ):
            process, address = serve(base, batching, session_flags)
            try:
                rows[label] = bench_server(address, process.pid, args.seconds)
            finally:
                process.terminate()
                process.wait(60)

    print(
        f"{base.name} version {latest.name}, {args.seconds:g} s per cell, one image per request, "
        f"session threads intra-op {args.intra_op} inter-op {args.inter_op} (0: TensorFlow's)"
    )
    print("| path | concurrency | requests/s | p50 ms | p99 ms | CPU ms per request |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, results in rows.items():
        for concurrency, (rate, latencies, cpu_ms) in results.items():
            print(
                f"| {label} | {concurrency} | {rate:.0f} | {percentile(latencies, 50):.2f} | "
                f"{percentile(latencies, 99):.2f} | {cpu_ms:.2f} |"
            )
    off, on = rows["model server, batching off"], rows["model server, batching on"]
    print(f"\nbatching on / off at concurrency 32: {on[32][0] / off[32][0]:.2f}x requests/s")
    added = statistics.median(off[1][1]) - statistics.median(in_process[1][1])
    print(f"server p50 minus in-process p50 at concurrency 1: {added * 1000:.2f} ms")


if __name__ == "__main__":
    main()
