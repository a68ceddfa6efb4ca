"""Benchmark the gateway against a direct gRPC client and a naive TensorFlow gateway (by hand).

Starts `nnserve model-server` on a digits model, `nnserve gateway` and bench/naive_gateway.py in
front of it, then sends the same digits predict request at each concurrency:
  - direct:  grpc.aio straight to the model server (what the gateway cannot beat),
  - gateway: HTTP JSON through `nnserve gateway`,
  - naive:   HTTP JSON through the tutorial-style gateway (TensorFlow in the process);
  - floor:   HTTP through bench/floor_gateway.py, which forwards a request built at start-up
             and does nothing else (what uvicorn and grpc.aio cost before any gateway's work);
HTTP load comes from Debian's wrk (C), so the load generator is not what is measured.
The gateway runs with every feature on: an API key configured (wrk sends it to every front end)
and its JSON access log at INFO (to /dev/null), beside its metrics and checks.
--baseline DIR also measures `nnserve gateway` from another checkout (e.g. `git worktree add` of
main) as the client "baseline", in turn with the others, so that a change is compared with what
it changes in the same run.
"client CPU ms/request" is the CPU time of the process that calls the model server (the direct
client or the HTTP front end; wrk itself is not counted) per request answered.
It also measures the gateway's start-up (process start to the first /healthz answer; this is
interpreter, imports and app start-up together) and its resident memory.

    python bench/gateway.py --model-base-path models/digits-cnn [--seconds 5] [--rounds 3] \
        [--placement split] [--intra-op N --inter-op N] [--baseline DIR] [--clients LIST]

--rounds measures every cell that many times, the clients in turn, and reports medians.
--intra-op and --inter-op go to the model server as --tensorflow_intra_op_parallelism and
--tensorflow_inter_op_parallelism (0: TensorFlow's choice).

Targets (issue #4): at concurrency 16 the gateway keeps >= 0.85 of direct's requests/s and adds
<= 1 ms at p50; start-up <= 1.5 s; resident memory after start-up <= 150 MB.
"""

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.processes import cpu_seconds, free_port, rss_mb  # noqa: E402
from service import wire  # noqa: E402
from service.gateway.codec import array_to_tensor  # noqa: E402
from service.wire import methods  # noqa: E402

MODEL = "digits-cnn"
CONCURRENCY = (1, 16, 64)
FRONT_ENDS = ("gateway", "baseline", "naive", "floor")
API_KEY = "bench-key"


def start(
    args: list[str],
    env: dict[str, str] | None = None,
    cpus: set[int] | None = None,
    cwd: Path = REPO_ROOT,
) -> subprocess.Popen:
    """A child process, on `cpus` when given (else on the CPUs this process may use)."""
    return subprocess.Popen(
        args,
        cwd=cwd,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )


def wait_for(
    url: str, process: subprocess.Popen, timeout: float = 180, method: str = "GET", **request
) -> float:
    """Seconds until `url` answers 200 (to `method` with the API key and `request`)."""
    started = time.perf_counter()
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise SystemExit(f"{process.args} exited with {process.returncode}")
        try:
            answer = httpx.request(method, url, headers=headers, timeout=1, **request)
            if answer.status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.01)
    raise SystemExit(f"{url} did not answer within {timeout} s")


def placement(kind: str) -> tuple[set[int] | None, set[int] | None]:
    """The CPUs of the model server and of everything else; None means all of this process's."""
    if kind == "shared":
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--placement split needs at least two CPUs")
    return {cpus[0]}, set(cpus[1:])


async def run_load(call, concurrency: int, seconds: float) -> list[float]:
    """Latencies (s) of calls made by `concurrency` workers for `seconds` (after a warm-up)."""
    latencies: list[float] = []
    stop_at = 0.0

    async def worker(record: bool) -> None:
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            await call()
            if record:
                latencies.append(time.perf_counter() - began)

    for record, duration in ((False, 1.0), (True, seconds)):
        stop_at = time.perf_counter() + duration
        await asyncio.gather(*(worker(record) for _ in range(concurrency)))
    return latencies


def summary(latencies: list[float], seconds: float) -> dict:
    ordered = np.sort(np.array(latencies))
    return {
        "rps": len(ordered) / seconds,
        "p50_ms": float(np.percentile(ordered, 50)) * 1000,
        "p99_ms": float(np.percentile(ordered, 99)) * 1000,
    }


def wrk(url: str, body_file: Path, concurrency: int, seconds: float) -> dict:
    """requests/s, p50 and p99 of POSTing the body to `url` with Debian's wrk (C, one thread),
    and the requests answered in all, the 1 s warm-up's included."""
    script = Path(tempfile.mkdtemp(prefix="nnserve-bench-")) / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["X-API-Key"] = "{API_KEY}"\n'
        f"wrk.body = io.open({json.dumps(str(body_file))}, 'rb'):read('*a')\n"
    )
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "-s", str(script)]
    warm_up = subprocess.run(
        [*command[:3], "-d1s", *command[4:], url], check=True, capture_output=True, text=True
    ).stdout
    out = subprocess.run([*command, url], check=True, capture_output=True, text=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"{url} answered errors:\n{out}")
    percentiles = dict(re.findall(r"^\s+(50|99)\.000%\s+(\S+)\s*$", out, re.MULTILINE))
    percentiles = percentiles or dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    if set(percentiles) != {"50", "99"}:
        raise SystemExit(f"wrk gave no 50th and 99th percentiles for {url}:\n{out}")
    return {
        "rps": float(re.search(r"Requests/sec:\s+(\S+)", out).group(1)),
        "p50_ms": _milliseconds(percentiles["50"]),
        "p99_ms": _milliseconds(percentiles["99"]),
        "requests": sum(_answered(text) for text in (warm_up, out)),
        # connect, read and write errors and requests unanswered after wrk's 2 s timeout
        "socket_errors": sum(map(int, re.findall(r"(?:connect|read|write|timeout) (\d+)", out))),
    }


def _answered(wrk_output: str) -> int:
    return int(re.search(r"(\d+) requests in", wrk_output).group(1))


def _milliseconds(text: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)(us|ms|s)", text).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def predict_request(body: bytes) -> wire.PredictRequest:
    """The PredictRequest for the row-format digits request `body` (our wire messages)."""
    instances = np.array(json.loads(body)["instances"], dtype=np.float32)
    request = wire.PredictRequest(model_spec=wire.ModelSpec(name=MODEL))
    request.inputs["image"].CopyFrom(array_to_tensor(instances))
    return request


async def direct_load(grpc_address: str, body: bytes, concurrency: int, seconds: float) -> dict:
    """The same request straight to the model server with grpc.aio."""
    request = predict_request(body)
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = methods.PREDICT.bind(channel)

        async def call() -> None:
            await stub(request, timeout=30)

        return summary(await run_load(call, concurrency, seconds), seconds)


async def wait_for_model(
    grpc_address: str, body: bytes, process: subprocess.Popen, timeout: float = 300
) -> None:
    """Until the model server answers a predict (it listens before its model has loaded)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise SystemExit(f"{process.args} exited with {process.returncode}")
        try:
            await direct_load(grpc_address, body, 1, 0.1)
            return
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)
    raise SystemExit(f"the model server at {grpc_address} did not answer within {timeout} s")


def measure(
    grpc_address: str,
    urls: dict[str, str],
    body_file: Path,
    seconds: float,
    pids: dict[str, int],
    rounds: int,
) -> dict:
    """Each client at each concurrency, `rounds` times in turn (so that a noisy moment on a
    shared machine hits one round, not one client), with the CPU ms per request of the process
    in front of the model server (the direct client is this process; wrk is not counted) and of
    the model server."""
    body = body_file.read_bytes()
    results: dict = {}
    for concurrency in CONCURRENCY:
        for _ in range(rounds):
            for name in ("direct", *urls):
                front, server = pids[name], pids["model server"]
                before = cpu_seconds(front), cpu_seconds(server, descendants=True)
                if name == "direct":
                    row = asyncio.run(direct_load(grpc_address, body, concurrency, seconds))
                else:
                    row = wrk(urls[name], body_file, concurrency, seconds)
                # The warm-up second is inside the CPU time, so it counts its requests too.
                requests = row["rps"] * (seconds + 1)
                row["front_cpu_ms"] = (cpu_seconds(front) - before[0]) * 1000 / requests
                server_cpu = cpu_seconds(server, descendants=True) - before[1]
                row["server_cpu_ms"] = server_cpu * 1000 / requests
                results.setdefault((name, concurrency), []).append(row)
                print(f"  c={concurrency:<3} {name:<8} {row}", flush=True)
    return results


def report(results: dict, startup: list[float], rss: tuple[float, float] | None) -> str:
    """Medians over the rounds; the columns "vs direct" are medians of each round's comparison
    with the direct client's run just before it."""
    lines = [
        "| concurrency | client | requests/s | p50 ms | p99 ms | requests/s vs direct "
        "| p50 vs direct | client CPU ms/request | model server CPU ms/request |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    spread = []
    clients = list(dict.fromkeys(name for name, _ in results))
    for concurrency in CONCURRENCY:
        direct = results[("direct", concurrency)]
        for name in clients:
            rows = results[(name, concurrency)]
            ratios = [row["rps"] / base["rps"] for row, base in zip(rows, direct, strict=True)]
            added = [row["p50_ms"] - base["p50_ms"] for row, base in zip(rows, direct, strict=True)]
            median = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
            lines.append(
                f"| {concurrency} | {name} | {median['rps']:.0f} | {median['p50_ms']:.2f} | "
                f"{median['p99_ms']:.2f} | {statistics.median(ratios):.2f} | "
                f"{statistics.median(added):+.2f} ms | {median['front_cpu_ms']:.2f} | "
                f"{median['server_cpu_ms']:.2f} |"
            )
            if name != "direct" and len(rows) > 1:
                shown = ", ".join(f"{ratio:.2f}" for ratio in ratios)
                spread.append(f"c={concurrency} {name}: requests/s vs direct by round {shown}")
    lines += ["", *spread, ""]
    lines.append(
        f"gateway start-up (process start to first /healthz answer), {len(startup)} runs: "
        f"median {statistics.median(startup):.2f} s, max {max(startup):.2f} s"
    )
    if rss is not None:
        lines.append(
            f"gateway resident memory: {rss[0]:.0f} MB after start-up, {rss[1]:.0f} MB after the "
            "load"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-base-path", type=Path, default=Path("models") / MODEL)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--startup-runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1, help="measurements of each cell")
    parser.add_argument("--intra-op", type=int, default=0, help="model server intra-op threads")
    parser.add_argument("--inter-op", type=int, default=0, help="model server inter-op threads")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout whose `nnserve gateway` is measured too, as the client 'baseline'",
    )
    parser.add_argument(
        "--clients",
        default="gateway,naive,floor",
        help="comma-separated front ends to measure beside direct (baseline is added with "
        "--baseline)",
    )
    parser.add_argument(
        "--placement",
        choices=("shared", "split"),
        default="shared",
        help="shared: every process on every CPU; split: the model server alone on the first "
        "CPU, clients and gateways on the others (as when the server has a machine of its own)",
    )
    args = parser.parse_args()
    clients = [name for name in args.clients.split(",") if name]
    if args.baseline is not None:
        clients.insert(1, "baseline")
    unknown = set(clients) - set(FRONT_ENDS)
    if unknown:
        raise SystemExit(f"unknown clients {sorted(unknown)}: choose from {FRONT_ENDS}")
    base = args.model_base_path.resolve()
    examples = sorted(base.glob("*/assets.extra/example_request.json"))
    if not examples:
        raise SystemExit(f"no version of {MODEL} in {base}: run `nnserve train` first")
    example = examples[-1]

    ports = {name: free_port() for name in FRONT_ENDS}
    grpc_port = free_port()
    server_cpus, client_cpus = placement(args.placement)
    nnserve = [sys.executable, "-m", "service.cli"]
    server = start(
        [*nnserve, "model-server", "--host", "127.0.0.1", f"--port={grpc_port}",
         f"--model_name={MODEL}", f"--model_base_path={base}",
         f"--tensorflow_intra_op_parallelism={args.intra_op}",
         f"--tensorflow_inter_op_parallelism={args.inter_op}"],
        cpus=server_cpus,
    )  # fmt: skip
    backend = {
        "NNSERVE_TFSERVING_ADDR": f"127.0.0.1:{grpc_port}",
        "NNSERVE_API_KEYS": API_KEY,
        "NNSERVE_LOG_LEVEL": "INFO",  # the access log
    }
    processes = [server]
    try:
        # Start-up is measured once the model server has loaded (while TensorFlow imports, it
        # takes a whole core, which is not the gateway's cost) and before any pinning.
        asyncio.run(wait_for_model(f"127.0.0.1:{grpc_port}", example.read_bytes(), server))
        startup = []
        for _ in range(args.startup_runs):
            port = free_port()
            probe = start([*nnserve, "gateway", "--port", str(port)], backend)
            startup.append(wait_for(f"http://127.0.0.1:{port}/healthz", probe))
            probe.terminate()
            probe.wait(30)
        if client_cpus:
            os.sched_setaffinity(0, client_cpus)  # wrk and the gateways inherit it
        commands = {
            "gateway": [*nnserve, "gateway", "--port", str(ports["gateway"])],
            "baseline": [*nnserve, "gateway", "--port", str(ports["baseline"])],
            "naive": [sys.executable, str(REPO_ROOT / "bench" / "naive_gateway.py"),
                      str(ports["naive"]), f"127.0.0.1:{grpc_port}"],
            "floor": [sys.executable, str(REPO_ROOT / "bench" / "floor_gateway.py"),
                      str(ports["floor"]), f"127.0.0.1:{grpc_port}", str(example)],
        }  # fmt: skip
        fronts = {}
        for name in clients:
            fronts[name] = start(
                commands[name], backend, cwd=args.baseline if name == "baseline" else REPO_ROOT
            )
            processes.append(fronts[name])
        urls = {
            name: f"http://127.0.0.1:{ports[name]}/v1/models/{MODEL}:predict" for name in clients
        }
        rss_after_startup = None
        if "gateway" in fronts:
            wait_for(f"http://127.0.0.1:{ports['gateway']}/healthz", fronts["gateway"])
            rss_after_startup = rss_mb(fronts["gateway"].pid)
        for name in clients:
            wait_for(urls[name], fronts[name], method="POST", content=example.read_bytes())
        pids = {
            "direct": os.getpid(),
            "model server": server.pid,
            **{name: process.pid for name, process in fronts.items()},
        }
        results = measure(f"127.0.0.1:{grpc_port}", urls, example, args.seconds, pids, args.rounds)
        print()
        rss = (
            None
            if rss_after_startup is None
            else (rss_after_startup, rss_mb(fronts["gateway"].pid))
        )
        print(report(results, startup, rss))
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)


if __name__ == "__main__":
    main()
