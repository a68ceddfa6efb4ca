"""Benchmark nnserve against the Python serving stacks a user would pick instead (by hand only).

    python bench/peers.py [--model-base-path models/digits-cnn] [--rounds 3] [--seconds 10] \
        [--cache-dir ~/.cache/nnserve/peers] [--peers nnserve,fastapi,kserve,bentoml,litserve] \
        [--prepare]

Every peer serves the same SavedModel (the newest version under --model-base-path) with one
worker and its default settings, from a file of its own under bench/peers/, in a virtual
environment of its own under --cache-dir/venvs, installed from bench/peers/requirements/PEER.txt
(pinned; reused while that file is unchanged; one pip cache for all). --prepare only installs
them. nnserve runs as `nnserve up` runs it: `nnserve model-server` and `nnserve gateway`, started
together, from this checkout, on the Python running this script (the project's venv).

Every peer is first started once, untimed. All keep their compiled bytecode in
--cache-dir/pycache (PYTHONPYCACHEPREFIX), whatever compiled (or did not compile) at install
time, so each timed start is a second start, as on a user's machine. Each round
then starts every peer in turn, alone, timing process start to the first answer whose
probabilities match the SavedModel's own (computed outside any server; a wrong answer stops the
benchmark), POSTs the same one-image request body (the version's example_request.json, TF
Serving's row format, which every peer here takes) with Debian's wrk at concurrency 1, 16 and
64, the peers in turn within each concurrency, --seconds after a 1 s warm-up, and stops them.
The order of the peers rotates from round to round. The report gives medians over rounds:
requests/s, p50 and p99; CPU time per request answered of each process tree (nnserve: gateway
and model server apart; the warm-up's requests and CPU both count); resident memory of each tree
after the round's load; and start to first correct answer.
Peer logs go to --cache-dir/logs.

Goals (issue 16), against the best other peer in the same run: requests/s >= 1.5x at
concurrency 16 and >= 1.1x at 1; p99 at 16 no worse than any peer's; start to first answer no
slower than the fastest peer's; model server memory no more than the FastAPI peer's.
"""

import argparse
import contextlib
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.gateway import wrk  # noqa: E402
from bench.processes import cpu_seconds, free_port, rss_mb  # noqa: E402
from service.processes import dies_with_parent  # noqa: E402

PEER_FILES = REPO_ROOT / "bench" / "peers"
CONCURRENCY = (1, 16, 64)
NNSERVE = "nnserve"
FASTAPI = "fastapi"
START_TIMEOUT_SECONDS = 300
STOP_TIMEOUT_SECONDS = 30


@dataclass
class Running:
    """A started peer: the URL it answers predictions on and its process trees by role."""

    url: str
    processes: dict[str, subprocess.Popen]


@dataclass
class Launch:
    """What starting a peer needs: its environment's Python, the SavedModel version, a folder
    to run in (some peers write files into their working directory), a log file, and where
    every peer's Python keeps the bytecode it compiles."""

    python: Path
    version_dir: Path
    model_name: str
    workdir: Path
    log: Path
    pycache: Path

    def start(self, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        # Bytecode in one folder of the cache for every peer alike, however its venv was
        # installed: a PYTHONDONTWRITEBYTECODE in the environment would otherwise have every
        # start of a venv without bytecode (the peers' own files) compile its modules again.
        environ = {key: value for key, value in os.environ.items()
                   if key != "PYTHONDONTWRITEBYTECODE"}  # fmt: skip
        environ |= {"PYTHONPYCACHEPREFIX": str(self.pycache)}
        # A process group of its own: stopping it also ends workers its leader leaves behind.
        with self.log.open("ab") as log:
            return subprocess.Popen(
                command,
                cwd=self.workdir,
                env={**environ, "BENCH_SAVEDMODEL": str(self.version_dir), **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=dies_with_parent(signal.SIGTERM),
            )


def start_nnserve(launch: Launch) -> Running:
    """The two processes `nnserve up` starts, with its arguments, from this checkout."""
    nnserve = [str(launch.python), "-m", "service.cli"]
    grpc_port, http_port = free_port(), free_port()
    env = {
        "PYTHONPATH": str(REPO_ROOT),
        "NNSERVE_MODEL_REPO": str(launch.version_dir.parent.parent),
    }
    model_server = launch.start(
        [*nnserve, "model-server", "--host", "127.0.0.1", f"--port={grpc_port}",
         f"--model_name={launch.model_name}", f"--model_base_path={launch.version_dir.parent}"],
        env,
    )  # fmt: skip
    gateway = launch.start(
        [*nnserve, "gateway", "--host", "127.0.0.1", "--port", str(http_port)],
        {**env, "NNSERVE_TFSERVING_ADDR": f"127.0.0.1:{grpc_port}"},
    )
    url = f"http://127.0.0.1:{http_port}/v1/models/{launch.model_name}:predict"
    return Running(url, {"gateway": gateway, "model server": model_server})


def start_fastapi(launch: Launch) -> Running:
    port = free_port()
    server = launch.start([str(launch.python), str(PEER_FILES / "fastapi_app.py"), str(port)])
    return Running(f"http://127.0.0.1:{port}/predict", {"server": server})


def start_kserve(launch: Launch) -> Running:
    http_port, grpc_port = free_port(), free_port()
    server = launch.start(
        [str(launch.python), str(PEER_FILES / "kserve_model.py"),
         f"--model_name={launch.model_name}", f"--http_port={http_port}",
         f"--grpc_port={grpc_port}"]
    )  # fmt: skip
    url = f"http://127.0.0.1:{http_port}/v1/models/{launch.model_name}:predict"
    return Running(url, {"server": server})


def start_bentoml(launch: Launch) -> Running:
    port = free_port()
    server = launch.start(
        [str(launch.python), "-m", "bentoml", "serve", "bentoml_service:Digits",
         "--working-dir", str(PEER_FILES), "--host", "127.0.0.1", "--port", str(port)],
        # BentoML keeps its store in its home, and would report usage to the internet.
        {"BENTOML_HOME": str(launch.workdir / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"},
    )  # fmt: skip
    return Running(f"http://127.0.0.1:{port}/predict", {"server": server})


def start_litserve(launch: Launch) -> Running:
    port = free_port()
    server = launch.start([str(launch.python), str(PEER_FILES / "litserve_api.py"), str(port)])
    return Running(f"http://127.0.0.1:{port}/predict", {"server": server})


STARTERS: dict[str, Callable[[Launch], Running]] = {
    NNSERVE: start_nnserve,
    FASTAPI: start_fastapi,
    "kserve": start_kserve,
    "bentoml": start_bentoml,
    "litserve": start_litserve,
}
LABELS = {
    NNSERVE: "nnserve (gateway + model server)",
    FASTAPI: "FastAPI + uvicorn, SavedModel in process",
    "kserve": "KServe custom model",
    "bentoml": "BentoML",
    "litserve": "LitServe",
}


def environment(peer: str, cache: Path) -> Path:
    """The Python of `peer`'s virtual environment, installed first if its pins are new."""
    if peer == NNSERVE:
        return Path(sys.executable)
    requirements = PEER_FILES / "requirements" / f"{peer}.txt"
    pins = hashlib.sha256(requirements.read_bytes()).hexdigest()
    root = cache / "venvs" / peer
    python, stamp = root / "bin" / "python", root / "pins.sha256"
    if python.exists() and stamp.exists() and stamp.read_text() == pins:
        return python
    print(f"installing {peer} into {root}", flush=True)
    stamp.unlink(missing_ok=True)
    # The interpreter under this script's venv, so that every peer runs the same Python.
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(root)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--cache-dir", str(cache / "pip"),
         "-r", str(requirements)],
        check=True,
    )  # fmt: skip
    stamp.write_text(pins)
    return python


def expected_predictions(version_dir: Path, body_file: Path) -> list[dict]:
    """The SavedModel's own answer to the request, outside any server."""
    out = subprocess.run(
        [sys.executable, str(PEER_FILES / "reference.py"), str(version_dir), str(body_file)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    ).stdout
    return json.loads(out)


def is_correct(answer: dict, expected: list[dict]) -> bool:
    predictions = answer.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != len(expected):
        return False
    return all(
        set(got) == set(want)
        and all(np.allclose(got[key], want[key], rtol=1e-4, atol=1e-6) for key in want)
        for got, want in zip(predictions, expected, strict=True)
    )


def until_first_answer(
    name: str, running: Running, body: bytes, expected: list[dict], log: Path
) -> None:
    """Poll until the peer answers the request correctly; a wrong answer stops the benchmark."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    last = "no answer"
    while time.monotonic() < deadline:
        for role, process in running.processes.items():
            if process.poll() is not None:
                raise SystemExit(f"{name} {role} exited with {process.returncode}; see {log}")
        try:
            answer = httpx.post(
                running.url, content=body, headers={"Content-Type": "application/json"}, timeout=5
            )
        except httpx.HTTPError as error:
            last = repr(error)
        else:
            if answer.status_code == 200:
                if is_correct(answer.json(), expected):
                    return
                raise SystemExit(f"{name} answered wrong probabilities: {answer.text[:500]}")
            last = f"{answer.status_code} {answer.text[:200]}"
        time.sleep(0.05)
    raise SystemExit(
        f"{name} gave no correct answer in {START_TIMEOUT_SECONDS} s ({last}); see {log}"
    )


def stop(running: Running) -> None:
    """SIGTERM to each leader (nnserve: gateway before model server, as `nnserve up` does), then
    SIGKILL to whatever of its process group is left."""
    for process in running.processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(STOP_TIMEOUT_SECONDS)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def start(name: str, launch: Launch, body: bytes, expected: list[dict]) -> tuple[Running, float]:
    """A started peer, and the seconds from its start to its first correct answer."""
    started = time.perf_counter()
    running = STARTERS[name](launch)
    try:
        until_first_answer(name, running, body, expected, launch.log)
    except BaseException:
        stop(running)
        raise
    return running, time.perf_counter() - started


def run_round(
    order: list[str], launches: dict[str, Launch], body_file: Path, expected: list[dict],
    seconds: float,
) -> dict:  # fmt: skip
    """One round: each peer started alone and timed, all measured at each concurrency in
    `order`, memory read, all stopped. Results by (peer, key)."""
    body = body_file.read_bytes()
    results: dict = {}
    running: dict[str, Running] = {}
    try:
        for name in order:
            running[name], results[(name, "start_s")] = start(name, launches[name], body, expected)
            print(f"  {name:<9} first correct answer after {results[(name, 'start_s')]:.1f} s")
        for concurrency in CONCURRENCY:
            for name in order:
                trees = running[name].processes
                before = {role: cpu_seconds(p.pid, descendants=True) for role, p in trees.items()}
                try:
                    row = wrk(running[name].url, body_file, concurrency, seconds)
                except SystemExit as failure:  # one cell lost on a shared machine, not the run
                    print(f"  c={concurrency:<3} {name:<9} FAILED: {failure}", flush=True)
                    continue
                for role, process in trees.items():
                    spent = cpu_seconds(process.pid, descendants=True) - before[role]
                    row[f"cpu_ms {role}"] = spent * 1000 / row["requests"]
                results[(name, concurrency)] = row
                print(f"  c={concurrency:<3} {name:<9} {row}", flush=True)
        for name in order:
            for role, process in running[name].processes.items():
                results[(name, f"rss_mb {role}")] = rss_mb(process.pid, descendants=True)
    finally:
        for name in running:
            stop(running[name])
    return results


def median(rounds: list[dict], key: tuple) -> float:
    """The median over the rounds that measured `key` (a cell whose wrk run failed has none)."""
    return statistics.median(result[key] for result in rounds if key in result)


def cell_median(rounds: list[dict], name: str, concurrency: int, field: str) -> float:
    return statistics.median(
        result[(name, concurrency)][field] for result in rounds if (name, concurrency) in result
    )


def apart(values: dict[str, float], digits: int) -> str:
    """ " (gateway 1.00, model server 2.00)" for a peer of several processes, else ""."""
    if len(values) < 2:
        return ""
    return " (" + ", ".join(f"{role} {value:.{digits}f}" for role, value in values.items()) + ")"


def report(names: list[str], rounds: list[dict]) -> str:
    """Medians over rounds, and the goals against the best other peer."""
    roles = {
        name: [key[1].removeprefix("rss_mb ") for key in rounds[0]
               if key[0] == name and str(key[1]).startswith("rss_mb ")]
        for name in names
    }  # fmt: skip
    lines = [
        "| concurrency | server | requests/s | p50 ms | p99 ms | server CPU ms/request |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for concurrency in CONCURRENCY:
        for name in names:
            measured = sum((name, concurrency) in result for result in rounds)
            if not measured:
                lines.append(f"| {concurrency} | {LABELS[name]} | failed in every round | | | |")
                continue
            value = {
                field: cell_median(rounds, name, concurrency, field)
                for field in ("rps", "p50_ms", "p99_ms")
            }
            cpu = {
                role: cell_median(rounds, name, concurrency, f"cpu_ms {role}")
                for role in roles[name]
            }
            shortfall = f" ({measured} of {len(rounds)} rounds)" if measured < len(rounds) else ""
            lines.append(
                f"| {concurrency} | {LABELS[name]}{shortfall} | {value['rps']:.0f} | "
                f"{value['p50_ms']:.1f} | {value['p99_ms']:.1f} | "
                f"{sum(cpu.values()):.2f}{apart(cpu, 2)} |"
            )
    lines += [
        "",
        "| server | start to first correct answer s | RSS MB after the load |",
        "| --- | --- | --- |",
    ]
    for name in names:
        rss = {role: median(rounds, (name, f"rss_mb {role}")) for role in roles[name]}
        starts = ", ".join(f"{result[(name, 'start_s')]:.1f}" for result in rounds)
        lines.append(
            f"| {LABELS[name]} | {median(rounds, (name, 'start_s')):.1f} (rounds: {starts}) | "
            f"{sum(rss.values()):.0f}{apart(rss, 0)} |"
        )
    errors = [
        f"{name} at concurrency {concurrency}: {result[(name, concurrency)]['socket_errors']}"
        for result in rounds
        for concurrency in CONCURRENCY
        for name in names
        if result.get((name, concurrency), {}).get("socket_errors")
    ]
    if errors:
        lines += ["", "wrk's socket errors (timeouts included): " + "; ".join(errors)]
    if NNSERVE in names and len(names) > 1:
        lines += ["", *goals(names, rounds)]
    return "\n".join(lines)


def goals(names: list[str], rounds: list[dict]) -> list[str]:
    others = [name for name in names if name != NNSERVE]

    def against_best(result: dict, concurrency: int) -> str:
        cells = [(name, concurrency) for name in names]
        if not all(cell in result for cell in cells):
            return "-"
        best = max(result[(other, concurrency)]["rps"] for other in others)
        return f"{result[(NNSERVE, concurrency)]['rps'] / best:.2f}"

    lines = []
    for concurrency, goal in ((16, 1.5), (1, 1.1)):
        best = max(others, key=lambda name: cell_median(rounds, name, concurrency, "rps"))
        ratio = cell_median(rounds, NNSERVE, concurrency, "rps") / cell_median(
            rounds, best, concurrency, "rps"
        )
        by_round = ", ".join(against_best(result, concurrency) for result in rounds)
        lines.append(
            f"- requests/s at concurrency {concurrency}: {ratio:.2f}x the best peer's ({best}; "
            f"against each round's best: {by_round}); goal >= {goal}x: "
            f"{'met' if ratio >= goal else 'not met'}"
        )
    p99 = {name: cell_median(rounds, name, 16, "p99_ms") for name in names}
    best = min(others, key=p99.get)
    lines.append(
        f"- p99 at concurrency 16: {p99[NNSERVE]:.1f} ms against the best peer's {p99[best]:.1f} "
        f"ms ({best}): {'met' if p99[NNSERVE] <= p99[best] else 'not met'}"
    )
    start = {name: median(rounds, (name, "start_s")) for name in names}
    fastest = min(others, key=start.get)
    lines.append(
        f"- start to first correct answer: {start[NNSERVE]:.1f} s against {start[fastest]:.1f} s "
        f"({fastest}): {'met' if start[NNSERVE] <= start[fastest] else 'not met'}"
    )
    if FASTAPI in others:
        server = median(rounds, (NNSERVE, "rss_mb model server"))
        fastapi = median(rounds, (FASTAPI, "rss_mb server"))
        lines.append(
            f"- model server RSS: {server:.0f} MB against the FastAPI peer's {fastapi:.0f} MB: "
            f"{'met' if server <= fastapi else 'not met'}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-base-path", type=Path, default=REPO_ROOT / "models" / "digits-cnn")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per cell")
    parser.add_argument(
        "--cache-dir", type=Path, default=Path.home() / ".cache" / "nnserve" / "peers"
    )
    parser.add_argument(
        "--peers", default=",".join(STARTERS), help="comma-separated, from: " + ", ".join(STARTERS)
    )
    parser.add_argument("--prepare", action="store_true", help="only install the environments")
    args = parser.parse_args()
    names = args.peers.split(",")
    if unknown := set(names) - set(STARTERS):
        raise SystemExit(f"unknown peers {sorted(unknown)}; expected some of {list(STARTERS)}")
    cache = args.cache_dir.expanduser().resolve()
    pythons = {name: environment(name, cache) for name in names}
    if args.prepare:
        return
    base = args.model_base_path.resolve()
    versions = [p for p in base.iterdir() if p.name.isdigit()] if base.is_dir() else []
    if not versions:
        raise SystemExit(
            f"no version in {base}: run `nnserve train pipeline/specs/digits-cnn.yaml` first"
        )
    version_dir = max(versions, key=lambda path: int(path.name))
    body_file = version_dir / "assets.extra" / "example_request.json"
    expected = expected_predictions(version_dir, body_file)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    launches = {}
    for name in names:
        workdir = cache / "work" / name
        workdir.mkdir(parents=True, exist_ok=True)
        (cache / "logs").mkdir(exist_ok=True)
        log = cache / "logs" / f"{stamp}-{name}.log"
        launches[name] = Launch(
            pythons[name], version_dir, base.name, workdir, log, cache / "pycache"
        )
    cells = args.rounds * len(names) * len(CONCURRENCY)
    print(
        f"{base.name} version {version_dir.name}; peers {', '.join(names)}; {args.rounds} rounds "
        f"of {len(CONCURRENCY)} x {len(names)} cells of {args.seconds:g} s (+1 s warm-up): "
        f"about {cells * (args.seconds + 2) / 60 + args.rounds * len(names) * 0.4:.0f} min; "
        f"load average at the start {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    for name in names:
        if name != NNSERVE:
            print(" ", (PEER_FILES / "requirements" / f"{name}.txt").read_text().splitlines()[0])
    # Untimed: compiles each peer's bytecode into the cache and reads its files into the page
    # cache, so that every timed start is a second start, as on a user's machine.
    for name in names:
        running, seconds = start(name, launches[name], body_file.read_bytes(), expected)
        stop(running)
        print(f"  {name:<9} first start (untimed): {seconds:.1f} s", flush=True)
    rounds = []
    for number in range(args.rounds):
        order = names[number % len(names) :] + names[: number % len(names)]
        print(f"round {number + 1}: {', '.join(order)}", flush=True)
        rounds.append(run_round(order, launches, body_file, expected, args.seconds))
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}\n")
    print(report(names, rounds))


if __name__ == "__main__":
    main()
