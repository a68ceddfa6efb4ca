"""A predict's CPU in the gateway, in one process, with the model server's answers canned.

bench/gateway.py measures whole processes on a shared machine, where one noisy second moves a
figure by a third. This drives the gateway's whole stack in one process instead, and counts the
CPU time of many predicts on the same request:

- the HTTP protocol `nnserve gateway` runs under uvicorn (service/gateway/protocol.py on
  httptools, and the middleware uvicorn adds), fed the bytes wrk sends for bench/gateway.py's
  request on a connection that is not a socket (no socket system calls);
- the app with every feature on: an API key configured and sent, the JSON access log at INFO
  (written to /dev/null, one write(2) a line, as `nnserve gateway` writes it), metrics, the
  checks against the signature;
- the gRPC stubs replaced by ones that serialize the request and parse the model server's real
  answers, captured once from `nnserve model-server` on the model (so grpc.aio's own cost is
  left out, for the floor too).

bench/floor_gateway.py's app is driven the same way, in turn with the gateway: the ratio of
their CPU per predict is the in-process counterpart of bench/gateway.py's (which adds grpc.aio
and the sockets' system calls, the same for both). So is a third app, `dataplane`: a bare ASGI
app, as the floor's, that hands the body to the gateway's own DataPlane.predict (the JSON, the
checks against the signature, the PredictRequest and the answer's JSON) and sends what it
returns, with none of the framework around it (FastAPI, Starlette's objects, the middleware:
request id, API key, body limit, metrics, access log). What the gateway costs beyond it is what
a predict path below the framework could save at most. `--profile N` prints the N functions with the
most cumulative time in the gateway's first round (cProfile's overhead inflates small functions).

    python bench/gateway_inprocess.py --model-base-path models/digits-cnn [--requests 20000] \
        [--repeat 5] [--profile 40] [--answers FILE] [--apps gateway,dataplane,floor]

On a busy machine even CPU time moves by a fifth or more between runs; instructions do not. Under
valgrind (`valgrind --tool=cachegrind --cache-sim=no`), the difference in "I refs" between runs
of two request counts, divided by the difference in requests, is the instructions per predict.
"""

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import uvicorn
import uvloop
from uvicorn.lifespan.on import LifespanOn
from uvicorn.server import ServerState

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.floor_gateway import create_app as floor_app  # noqa: E402
from bench.floor_gateway import send_ok  # noqa: E402
from bench.gateway import MODEL, predict_request, wait_for_model  # noqa: E402
from bench.processes import free_port  # noqa: E402
from service import garbage_collection, json_logging, wire  # noqa: E402
from service.gateway.app import create_app  # noqa: E402
from service.gateway.dataplane import DataPlane, ModelTarget  # noqa: E402
from service.gateway.server import uvicorn_config  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.wire import methods  # noqa: E402

API_KEY = "bench-key"
APPS = ("gateway", "dataplane", "floor")


class Connection:
    """The transport uvicorn's protocol writes to: it keeps what is written, and no socket."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def get_extra_info(self, name: str, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def http_request(body: bytes, api_key: bool) -> bytes:
    """The request as wrk sends it (bench/gateway.py's script adds the same headers)."""
    head = [
        f"POST /v1/models/{MODEL}:predict HTTP/1.1",
        "Host: 127.0.0.1:8000",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if api_key:
        head.append(f"X-API-Key: {API_KEY}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def captured_answers(model_base_path: Path, body: bytes) -> tuple[bytes, bytes]:
    """The model server's serialized answers to GetModelMetadata and to the predict of `body`."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "model-server", "--host", "127.0.0.1",
         f"--port={port}", f"--model_name={MODEL}", f"--model_base_path={model_base_path}"],
        cwd=REPO_ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        address = f"127.0.0.1:{port}"
        asyncio.run(wait_for_model(address, body, server))
        with grpc.insecure_channel(address) as channel:
            metadata = wire.GetModelMetadataRequest(metadata_field=["signature_def"])
            metadata.model_spec.name = MODEL
            return (
                methods.GET_MODEL_METADATA.bind(channel)(metadata, timeout=30).SerializeToString(),
                methods.PREDICT.bind(channel)(
                    predict_request(body), timeout=30
                ).SerializeToString(),
            )
    finally:
        server.terminate()
        server.wait(30)


def canned(answer: bytes, parse: Callable | None) -> Callable:
    """A stand-in for a grpc.aio stub: serializes the request, answers `answer` (parsed)."""

    async def call(request, timeout: float | None = None):
        if not isinstance(request, bytes):
            request.SerializeToString()
        await asyncio.sleep(0)  # a real answer arrives on a later turn of the loop
        return answer if parse is None else parse(answer)

    return call


class Driven:
    """An ASGI app as uvicorn loads and starts it, fed requests on one keep-alive connection."""

    def __init__(self, config: uvicorn.Config) -> None:
        self.config = config
        self.config.load()
        self.lifespan = LifespanOn(self.config)

    async def __aenter__(self) -> "Driven":
        await self.lifespan.startup()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.lifespan.shutdown()

    async def cpu_per_request(
        self, request: bytes, count: int, profiler: cProfile.Profile | None = None
    ) -> float:
        """CPU seconds per request of `count` requests on one new connection."""
        state = ServerState()
        protocol = self.config.http_protocol_class(
            self.config, state, {}, asyncio.get_running_loop()
        )
        connection = Connection()
        protocol.connection_made(connection)

        async def one() -> None:
            protocol.data_received(request)
            while state.tasks:
                await asyncio.gather(*state.tasks)

        await one()
        self._check(connection)
        if profiler is not None:
            profiler.enable()
        started = time.process_time()
        for _ in range(count):
            connection.written.clear()
            await one()
        seconds = time.process_time() - started
        if profiler is not None:
            profiler.disable()
        self._check(connection)
        protocol.connection_lost(None)
        return seconds / count

    @staticmethod
    def _check(connection: Connection) -> None:
        if connection.closed or not connection.written.startswith(b"HTTP/1.1 200 "):
            answer = connection.written.decode(errors="replace")
            raise SystemExit(f"the app answered (closed: {connection.closed}):\n{answer}")


def dataplane_app(dataplane: DataPlane) -> Callable:
    """The gateway's data plane under a bare ASGI app: predict of MODEL, nothing around it."""
    target = ModelTarget(MODEL)

    async def app(scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send_ok(send, b"application/json", await dataplane.predict(target, body))

    return app


async def measure(args, answers: tuple[bytes, bytes], body: bytes) -> dict[str, list[float]]:
    """The gateway's, the bare data plane's and the floor's CPU per predict, `args.repeat` times
    each, in turn."""
    settings = Settings(tfserving_addr="127.0.0.1:1", api_keys=API_KEY, log_level="INFO")
    devnull = os.open(os.devnull, os.O_WRONLY)
    # As `nnserve gateway` writes its log lines: one write(2) each.
    json_logging.configure(settings.log_level, json_logging.LineWriter(devnull))
    gateway = create_app(settings)
    gateway_config = uvicorn_config(gateway, settings)
    floor = floor_app(predict_request(body).SerializeToString(), lambda: canned(answers[1], None))
    floor_config = uvicorn.Config(floor, log_level="warning", access_log=False)  # as its main
    request = http_request(body, api_key=True)
    profiler = cProfile.Profile() if args.profile else None
    runs: dict[str, list[float]] = {name: [] for name in APPS}
    async with Driven(gateway_config) as driven_gateway, Driven(floor_config) as driven_floor:
        backend = gateway.state.dataplane._backend
        backend._metadata = canned(answers[0], wire.GetModelMetadataResponse.FromString)
        backend._predict = canned(answers[1], wire.PredictResponse.FromString)
        dataplane_config = uvicorn.Config(
            dataplane_app(gateway.state.dataplane), log_level="warning", access_log=False
        )
        driven = {
            "gateway": driven_gateway,
            "dataplane": Driven(dataplane_config),
            "floor": driven_floor,
        }
        garbage_collection.tune_for_serving()
        for round_number in range(args.repeat):
            for name in args.apps:
                profiled = profiler if round_number == 0 and name == "gateway" else None
                seconds = await driven[name].cpu_per_request(request, args.requests, profiled)
                runs[name].append(seconds)
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile)
    os.close(devnull)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-base-path", type=Path, default=Path("models") / MODEL)
    parser.add_argument("--requests", type=int, default=20_000, help="predicts per measurement")
    parser.add_argument("--repeat", type=int, default=5, help="measurements (median reported)")
    parser.add_argument("--profile", type=int, default=0, help="show this many profile lines")
    parser.add_argument(
        "--apps",
        type=lambda text: text.split(","),
        default=list(APPS),
        help="which of gateway, dataplane and floor to measure, in turn (one, to count its "
        "instructions per predict under valgrind)",
    )
    parser.add_argument(
        "--answers",
        type=Path,
        help="keep the captured answers in this file, and read them from it when it exists "
        "(saves starting the model server when runs alternate)",
    )
    args = parser.parse_args()
    if unknown := set(args.apps) - set(APPS):
        parser.error(f"--apps: unknown {sorted(unknown)}; expected some of {', '.join(APPS)}")
    base = args.model_base_path.resolve()
    example = sorted(base.glob("*/assets.extra/example_request.json"))[-1]
    body = example.read_bytes()
    if args.answers is not None and args.answers.exists():
        metadata, predict = args.answers.read_bytes().split(b"\n", 1)
        answers = bytes.fromhex(metadata.decode()), bytes.fromhex(predict.decode())
    else:
        answers = captured_answers(base, body)
        if args.answers is not None:
            args.answers.write_text(f"{answers[0].hex()}\n{answers[1].hex()}")
    runs = uvloop.run(measure(args, answers, body))
    for name, measured in runs.items():
        if not measured:
            continue
        shown = ", ".join(f"{run * 1e6:.1f}" for run in measured)
        print(
            f"{name}: CPU us per predict, median {statistics.median(measured) * 1e6:.1f} ({shown})"
        )
    if "floor" in args.apps:
        for name in [name for name in args.apps if name != "floor"]:
            ratios = [own / f for own, f in zip(runs[name], runs["floor"], strict=True)]
            shown = ", ".join(f"{ratio:.2f}" for ratio in ratios)
            print(f"{name} / floor: median {statistics.median(ratios):.2f} ({shown})")


if __name__ == "__main__":
    main()
