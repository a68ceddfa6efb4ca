"""How long `nnserve train` takes to reach its first epoch, for one or more checkouts side by
side (by hand; results go to docs/benchmarks.md):

    python bench/first_epoch.py --checkout before=/tmp/before --checkout after=. --rounds 2

Each round runs every checkout in turn (the order rotating from round to round), each twice:
first with a new, empty PREFECT_HOME (as a fresh clone: Prefect's temporary API builds its
database), then again with the same one (warm). A run is `python -m service.cli train SPEC
--set training.epochs=1 --set gate.min_accuracy=0` from the checkout's root, on the Python
running this script, into a model repository and runs directory of its own; it is timed from
its start to the line `training on ...` that the flow logs just before the first epoch, then
stopped with its process group. The report gives each run's seconds and the load average at
its start, and the median per checkout and PREFECT_HOME.
"""

import argparse
import os
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FIRST_EPOCH_MARK = "training on "
TIMEOUT_SECONDS = 600


def seconds_to_first_epoch(checkout: Path, spec: Path, prefect_home: Path) -> float:
    with tempfile.TemporaryDirectory(prefix="nnserve-first-epoch-") as scratch:
        env = {
            **os.environ,
            "PYTHONPATH": str(checkout),
            "PREFECT_HOME": str(prefect_home),
            "NNSERVE_MODEL_REPO": str(Path(scratch) / "models"),
            "NNSERVE_RUNS_DIR": str(Path(scratch) / "runs"),
        }
        command = [sys.executable, "-m", "service.cli", "train", str(spec)]
        command += ["--set", "training.epochs=1", "--set", "gate.min_accuracy=0"]
        started = time.perf_counter()
        process = subprocess.Popen(
            command,
            cwd=checkout,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            return _until_mark(process, started)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _until_mark(process: subprocess.Popen, started: float) -> float:
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    output = []
    while time.perf_counter() - started < TIMEOUT_SECONDS:
        if not selector.select(timeout=1):
            continue
        line = process.stdout.readline().decode(errors="replace")
        if not line:
            break
        output.append(line)
        if FIRST_EPOCH_MARK in line:
            return time.perf_counter() - started
    tail = "".join(output[-20:])
    raise SystemExit(f"no line with {FIRST_EPOCH_MARK!r} (exit {process.poll()}):\n{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--checkout",
        action="append",
        metavar="NAME=PATH",
        help="a checkout to time (repeatable; default: this one, as 'this')",
    )
    parser.add_argument("--spec", default="pipeline/specs/digits-cnn.yaml")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    named = (item.partition("=") for item in args.checkout or [f"this={REPO_ROOT}"])
    checkouts = {name: Path(path).resolve() for name, _, path in named}
    times: dict[tuple[str, str], list[float]] = {}
    print("| round | checkout | PREFECT_HOME | seconds to the first epoch | load average |")
    print("| --- | --- | --- | --- | --- |")
    for number in range(args.rounds):
        names = list(checkouts)
        order = names[number % len(names) :] + names[: number % len(names)]
        for name in order:
            with tempfile.TemporaryDirectory(prefix="nnserve-prefect-home-") as prefect_home:
                for home in ("fresh", "warm"):
                    load = os.getloadavg()[0]
                    spec = checkouts[name] / args.spec
                    seconds = seconds_to_first_epoch(checkouts[name], spec, Path(prefect_home))
                    times.setdefault((name, home), []).append(seconds)
                    print(f"| {number + 1} | {name} | {home} | {seconds:.1f} | {load:.1f} |")
    print("\nmedians:")
    for (name, home), values in times.items():
        print(f"- {name}, {home} PREFECT_HOME: {statistics.median(values):.1f} s")


if __name__ == "__main__":
    main()
