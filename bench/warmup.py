"""The first request to a newly loaded version, with and without warm-up records.

Run by hand (not in the test suite), from the repository root:

    .venv/bin/python bench/warmup.py [--rounds 5] [--work-dir DIR]

It trains two models through the real Prefect flow into DIR (a temporary folder unless given; a
model already there is not trained again): `digits-cnn` as shipped, and the
fashion-mnist-resnet18 spec's architecture on the digits for one epoch (`digits-resnet18`). One
`nnserve model-server` (a real subprocess on 127.0.0.1, TF Serving's default version policy:
the newest version) polls a repository holding both. Each round publishes, for each model, each
batch size (1, and 8) and each of three copies of its export, in an order that rotates by round,
the copy as the next version:

- records: as exported, with its warm-up records;
- none: an empty records file, so nothing is replayed: what TF Serving does for a SavedModel
  without records;
- zeros: no records file: nnserve's own fallback, one call of `serving_default` on zeros at
  batch size 1 (TF Serving has none).

Once GetModelStatus reports the new version AVAILABLE (after its warm-up), and a pause of
--settle seconds, one client on a connection opened at the start sends held-out test examples
that are not in the records to that version: the first request, then --next more one after the
other. It reports, per model, batch size and copy, the median over rounds of the first
request's time, of the median of the next ones, and of their ratio.
"""

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.processes import free_port, no_model_server
from pipeline.datasets import load_dataset
from pipeline.preprocess import split_dataset
from pipeline.spec import load_spec
from service import model_repository
from service.model_status import AVAILABLE, END, ModelStatusClient

SPECS = Path(__file__).resolve().parent.parent / "pipeline" / "specs"
MODELS = {
    "digits-cnn": (SPECS / "digits-cnn.yaml", {}),
    "digits-resnet18": (
        SPECS / "fashion-mnist-resnet18.yaml",
        {
            "name": "digits-resnet18",
            "dataset": {"name": "digits", "seed": 42},
            "training": {"epochs": 1, "early_stopping": None},
            "gate": {"min_accuracy": 0.0},
        },
    ),
}
COPIES = ("records", "none", "zeros")
BATCH_SIZES = (1, 8)


def train(work_dir: Path) -> dict[str, Path]:
    """Each model's export (version 1 of the work folder's repository), trained if missing."""
    repo = work_dir / "models"
    missing = [name for name in MODELS if not (repo / name / "1").is_dir()]
    if missing:
        from prefect.testing.utilities import prefect_test_harness

        from pipeline.flow import retrain

        # Keras's epoch lines go to stderr: stdout is the results.
        with (
            prefect_test_harness(server_startup_timeout=120),
            redirect_stdout(sys.stderr),
            no_model_server(),
        ):
            for name in missing:
                spec_path, overrides = MODELS[name]
                retrain(
                    str(spec_path),
                    overrides=overrides,
                    model_repo=str(repo),
                    runs_dir=str(work_dir / "runs"),
                )
    return {name: repo / name / "1" for name in MODELS}


def copies_of(export: Path, scratch: Path) -> dict[str, Path]:
    """The export as is, with an empty records file, and without one."""
    records = model_repository.WARMUP_REQUESTS_PATH
    made = {}
    for copy in COPIES:
        made[copy] = scratch / copy
        shutil.copytree(export, made[copy])
        if copy == "none":
            (made[copy] / records).write_bytes(b"")
        elif copy == "zeros":
            (made[copy] / records).unlink()
    return made


def unrecorded_examples(name: str, count: int) -> np.ndarray:
    """Test examples from the end of the split; the records are made from its start."""
    spec_path, overrides = MODELS[name]
    spec = load_spec(spec_path, overrides)
    test = split_dataset(load_dataset(spec.dataset), spec.dataset).test
    return test.features[-count:].astype(np.float32)


def start_server(repo: Path, names: list[str]) -> tuple[subprocess.Popen, str]:
    config = repo / "models.config"
    config.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{name}" base_path: "{repo / name}" model_platform: '
            '"tensorflow" }\n'
            for name in names
        )
        + "}\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "model-server",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--model_config_file={config}",
            "--file_system_poll_wait_seconds=0.1",
        ],
        stderr=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=300)
    return process, address


def wait_available(status: ModelStatusClient, name: str, version: int) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        states = {s.version: (s.state, s.error) for s in status.statuses(name)}
        state, error = states.get(version, ("", ""))
        if state == AVAILABLE:
            return
        if state == END:
            raise RuntimeError(f"{name} version {version} failed to load: {error}")
        time.sleep(0.01)
    raise TimeoutError(f"{name} version {version} not AVAILABLE within 300 s")


def first_and_next(stub, name: str, version: int, batch: np.ndarray, following: int):
    """Seconds of the first Predict to `version` and of each of the `following` ones."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.version.value = version
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(batch))
    times = []
    for _ in range(1 + following):
        started = time.perf_counter()
        stub.Predict(request, timeout=120)
        times.append(time.perf_counter() - started)
    return times[0], times[1:]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--next", type=int, default=100, help="requests after the first")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds after AVAILABLE")
    parser.add_argument("--work-dir", type=Path, help="kept: trained models are reused")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        work_dir = args.work_dir or scratch / "work"
        exports = train(work_dir)
        repo = scratch / "repo"
        copies = {}
        for name, export in exports.items():
            copies[name] = copies_of(export, scratch / "copies" / name)
            model_repository.publish(copies[name]["records"], repo / name)  # version 1
        examples = {name: unrecorded_examples(name, max(BATCH_SIZES)) for name in MODELS}

        load_before = os.getloadavg()
        process, address = start_server(repo, list(MODELS))
        # (model, batch size, copy) -> per round: (first, median of the next)
        results: dict[tuple[str, int, str], list[tuple[float, float]]] = {}
        try:
            with (
                grpc.insecure_channel(address) as channel,
                ModelStatusClient(address) as status,
            ):
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                for name in MODELS:  # the connection and both models' version 1 answer first
                    first_and_next(stub, name, 1, examples[name][:1], 3)
                cells = list(itertools.product(MODELS, BATCH_SIZES, COPIES))
                for round_index in range(args.rounds):
                    shift = round_index % len(cells)
                    for name, batch_size, copy in cells[shift:] + cells[:shift]:
                        version = model_repository.publish(copies[name][copy], repo / name)
                        wait_available(status, name, version)
                        time.sleep(args.settle)
                        batch = examples[name][:batch_size]
                        first, following = first_and_next(stub, name, version, batch, args.next)
                        key = (name, batch_size, copy)
                        results.setdefault(key, []).append((first, statistics.median(following)))
                        for old in model_repository.list_versions(repo / name):
                            if old < version:
                                shutil.rmtree(repo / name / str(old))
                    print(f"round {round_index + 1} of {args.rounds} done", file=sys.stderr)
        finally:
            process.terminate()
            process.wait(60)
        load_after = os.getloadavg()

    print(
        f"{cpu_model()}, {os.cpu_count()} CPUs, load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after; {args.rounds} rounds, "
        f"{args.next} requests after the first, {args.settle:g} s after AVAILABLE"
    )
    print(
        "| model | batch | copy | first request ms | median of the next ms | first / median | "
        "first request ms by round |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, batch_size, copy in itertools.product(MODELS, BATCH_SIZES, COPIES):
        rounds = results[(name, batch_size, copy)]
        firsts = [first for first, _ in rounds]
        medians = [median for _, median in rounds]
        ratios = [first / median for first, median in rounds]
        print(
            f"| {name} | {batch_size} | {copy} | {statistics.median(firsts) * 1000:.2f} | "
            f"{statistics.median(medians) * 1000:.2f} | {statistics.median(ratios):.1f} | "
            f"{', '.join(f'{first * 1000:.1f}' for first in firsts)} |"
        )


if __name__ == "__main__":
    main()
