"""Benchmark `nnserve model-server`: Predict with TF Serving's official stubs, batching off and on.

Run by hand (not in the test suite), from the repository root:

    .venv/bin/python bench/model_server.py [--model-base-path models/digits-cnn] [--seconds 10] \
        [--intra-op N --inter-op N] [--rounds N] [--concurrency 1,8,32] \
        [--batching-parameters FILE ...] [--batching-flag=--FLAG=VALUE ...] \
        [--server-flag=--FLAG=VALUE ...] [--no-in-process]

For each concurrency it drives a server with batching off and one per batching parameters file
with batching on (by default one, `BATCHING` below), each a real subprocess on 127.0.0.1, and
reports requests/s, p50 and p99 beside the in-process SavedModel call (the ceiling). Each request
carries one example, as a single client would send: the export's example request
(assets.extra/example_request.json) where there is one. All servers run from the start; each
round measures every concurrency on each server in turn, the order rotating by round, so that
the machine's other load falls on all of them alike: with --rounds above 1 the figures are
medians over rounds and the on/off ratios medians of each round's ratio.
--intra-op and --inter-op are passed to every server as --tensorflow_intra_op_parallelism and
--tensorflow_inter_op_parallelism, and the in-process call's session gets the same threads;
--batching-flag adds a flag to the batching servers only (e.g. --grpc_max_threads, which caps
the requests in the server at once and so the batch size), --server-flag one to every server.
"CPU ms per request" is the serving process's CPU time (all threads) over the requests answered:
the in-process rows count this process, the server rows the server's. The in-process section
also gives what one call with 1, 8 and 32 examples costs, the most merging can save.
"""

import argparse
import functools
import json
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
from pipeline.export import EXAMPLE_REQUEST_PATH
from service.model_server.servable import SavedModelServable, session_config

BATCHING = "max_batch_size { value: 32 } batch_timeout_micros { value: 2000 } num_batch_threads { value: 2 } max_enqueued_batches { value: 1000 }"  # noqa: E501
OFF = "model server, batching off"
BATCH_SIZES = (1, 8, 32)


def one_example(servable: SavedModelServable) -> tuple[str, np.ndarray]:
    """The signature's input name and one example for it, batch dimension first."""
    (name, info), *others = servable.signature("").inputs.items()
    if others:
        raise SystemExit("this benchmark sends one input; the signature takes more")
    dtype = tf.dtypes.as_dtype(info.dtype).as_numpy_dtype
    request = servable.path / EXAMPLE_REQUEST_PATH
    if request.exists():
        return name, np.asarray(json.loads(request.read_text())["instances"][:1], dtype)
    dims = [max(dim.size, 1) for dim in info.tensor_shape.dim[1:]]
    return name, np.random.default_rng(0).uniform(0, 16, (1, *dims)).astype(dtype)


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
    model_base_path: Path, batching_file: Path | None, flags: list[str]
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "service.cli",
        "model-server",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--model_name={model_base_path.name}",
        f"--model_base_path={model_base_path}",
        *flags,
    ]
    if batching_file:
        args += ["--enable_batching", f"--batching_parameters_file={batching_file}"]
    process = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=300)
    return process, address


Cell = tuple[float, float, float, float]  # requests/s, p50 ms, p99 ms, CPU ms per request


def with_cpu(measure, pid: int | str = "self") -> Cell:
    """`measure()` -> (requests/s, latencies), with percentiles and the CPU ms per request `pid`
    spent on it."""
    descendants = pid != "self"  # the model server serves from a child process
    before = cpu_seconds(pid, descendants)
    rate, latencies = measure()
    cpu_ms = (cpu_seconds(pid, descendants) - before) * 1000 / len(latencies)
    return rate, percentile(latencies, 50), percentile(latencies, 99), cpu_ms


class Server:
    """A running model server and a Predict call of one example on one channel to it."""

    def __init__(self, base: Path, batching: Path | None, flags: list[str], example) -> None:
        self.process, address = serve(base, batching, flags)
        self.channel = grpc.insecure_channel(address)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = base.name
        name, value = example
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.call = functools.partial(stub.Predict, request, timeout=60)
        drive(self.call, 4, 1.0)  # warm the connection and the graph

    def measure(self, concurrency: int, seconds: float) -> Cell:
        return with_cpu(functools.partial(drive, self.call, concurrency, seconds), self.process.pid)

    def stop(self) -> None:
        self.channel.close()
        self.process.terminate()
        self.process.wait(60)


def batch_costs(servable: SavedModelServable, name: str, value: np.ndarray) -> dict[int, float]:
    """Median ms of one call with N examples, from this thread alone."""
    costs = {}
    for size in BATCH_SIZES:
        inputs = {name: np.repeat(value, size, axis=0)}
        servable.run("", inputs)
        times = []
        for _ in range(max(5, 60 // size)):
            start = time.perf_counter()
            servable.run("", inputs)
            times.append(time.perf_counter() - start)
        costs[size] = statistics.median(times) * 1000
    return costs


def ratio_of(ratios: list[float]) -> str:
    text = f"{statistics.median(ratios):.2f}x"
    return text + f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else text


def median_cell(cells: list[Cell]) -> Cell:
    return tuple(statistics.median(column) for column in zip(*cells, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base-path", type=Path, default=Path("models/digits-cnn"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--intra-op", type=int, default=0, help="session intra-op threads")
    parser.add_argument("--inter-op", type=int, default=0, help="session inter-op threads")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated")
    parser.add_argument(
        "--batching-parameters",
        type=Path,
        action="append",
        help="a BatchingParameters text file; one batching server per file (default: BATCHING)",
    )
    parser.add_argument(
        "--batching-flag", action="append", default=[], help="a flag for the batching servers only"
    )
    parser.add_argument(
        "--server-flag", action="append", default=[], help="a flag for every server"
    )
    parser.add_argument("--no-in-process", action="store_true", help="skip the in-process rows")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    session_flags = [
        f"--tensorflow_intra_op_parallelism={args.intra_op}",
        f"--tensorflow_inter_op_parallelism={args.inter_op}",
        *args.server_flag,
    ]
    base = args.model_base_path.resolve()
    latest = max((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))

    servable = SavedModelServable(
        latest, session_config=session_config(0, args.intra_op, args.inter_op)
    )
    name, value = example = one_example(servable)
    rows: dict[str, dict[int, Cell]] = {}
    costs = batch_costs(servable, name, value)
    if not args.no_in_process:
        call = functools.partial(servable.run, "", {name: value})
        rows["in-process SavedModel call"] = {
            c: with_cpu(functools.partial(drive, call, c, args.seconds)) for c in concurrencies
        }
    del servable

    with tempfile.TemporaryDirectory() as scratch:
        batching_files = args.batching_parameters
        if not batching_files:
            batching_files = [Path(scratch) / "batching.config"]
            batching_files[0].write_text(BATCHING)
        # What each file sets, without its comments, for the report (the default's file goes).
        settings = {
            path.name: " ".join(
                " ".join(line.split())
                for line in path.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            )
            for path in batching_files
        }
        configs = {OFF: (None, session_flags)}
        for path in batching_files:
            label = "model server, batching on"
            if args.batching_parameters:
                label += f" ({path.name})"
            configs[label] = (path, session_flags + args.batching_flag)
        servers: dict[str, Server] = {}
        try:
            for label, (batching, flags) in configs.items():
                servers[label] = Server(base, batching, flags, example)
            per_round: dict[str, dict[int, list[Cell]]] = {
                label: {c: [] for c in concurrencies} for label in servers
            }
            labels = list(servers)
            for round_index in range(args.rounds):
                shift = round_index % len(labels)
                for concurrency in concurrencies:
                    for label in labels[shift:] + labels[:shift]:
                        cell = servers[label].measure(concurrency, args.seconds)
                        per_round[label][concurrency].append(cell)
        finally:
            for server in servers.values():
                server.stop()

    for label, by_concurrency in per_round.items():
        rows[label] = {c: median_cell(cells) for c, cells in by_concurrency.items()}
    print(
        f"{base.name} version {latest.name}, input {name} {list(value.shape)}, "
        f"{args.seconds:g} s per cell, {args.rounds} round(s) (medians), session threads "
        f"intra-op {args.intra_op} inter-op {args.inter_op} (0: TensorFlow's), every server's "
        f"flags: {' '.join(args.server_flag) or 'none'}, batching servers' own flags: "
        f"{' '.join(args.batching_flag) or 'none'}"
    )
    print(
        "in process, one call from one thread: "
        + ", ".join(f"{n} examples {ms:.2f} ms ({ms / n:.3f} ms each)" for n, ms in costs.items())
    )
    for name, setting in settings.items():
        print(f"{name}: {setting}")
    print("\n| path | concurrency | requests/s | p50 ms | p99 ms | CPU ms per request |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, results in rows.items():
        for concurrency, (rate, p50, p99, cpu_ms) in results.items():
            cells = f"{rate:.0f} | {p50:.2f} | {p99:.2f} | {cpu_ms:.2f}"
            print(f"| {label} | {concurrency} | {cells} |")
    print("\nbatching on / off, median of each round's ratio (lowest and highest round):")
    columns = ["requests/s on / off", "p99 on / off", "CPU ms per request off / on"]
    print(f"| batching server | concurrency | {' | '.join(columns)} |")
    print("| --- | --- | --- | --- | --- |")
    off = per_round[OFF]
    for label, by_concurrency in per_round.items():
        if label == OFF:
            continue
        for c, cells in by_concurrency.items():
            pairs = list(zip(cells, off[c], strict=True))
            ratios = [
                ratio_of([on[0] / o[0] for on, o in pairs]),
                ratio_of([on[2] / o[2] for on, o in pairs]),
                ratio_of([o[3] / on[3] for on, o in pairs]),
            ]
            print(f"| {label} | {c} | {' | '.join(ratios)} |")
    if "in-process SavedModel call" in rows and 1 in concurrencies:
        added = rows[OFF][1][1] - rows["in-process SavedModel call"][1][1]
        print(f"\nserver p50 minus in-process p50 at concurrency 1: {added:.2f} ms")


if __name__ == "__main__":
    main()
