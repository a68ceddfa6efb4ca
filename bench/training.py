"""Training benchmark, run by hand (results go to docs/benchmarks.md):

    python bench/training.py throughput [--epochs 10]
    python bench/training.py accuracy [--specs digits-cnn digits-lstm iris-mlp sunspots-lstm]

`throughput` trains the digits CNN and the digits LSTM in one process, each twice through the
pipeline's own fit (tf.data pipeline, checkpoint, history and TensorBoard callbacks) and twice
through a bare `model.fit` on numpy arrays (same model, data, batch size and epochs); it prints
examples per second of every run and the ratio of the best of each (target: at least 0.9).
`accuracy` runs the real flow on shipped specs and prints each one's test metrics.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
SPECS = REPO_ROOT / "pipeline" / "specs"


def throughput(epochs: int) -> None:
    import keras

    from pipeline import training
    from pipeline.datasets import load_dataset
    from pipeline.flow import head_of, model_for
    from pipeline.preprocess import split_dataset
    from pipeline.spec import load_spec

    print(f"{'spec':<14} {'way':<9} {'examples/s':>11}")
    for name in ("digits-cnn", "digits-lstm"):
        spec = load_spec(SPECS / f"{name}.yaml", {"training": {"epochs": epochs}})
        dataset = load_dataset(spec.dataset)
        splits = split_dataset(dataset, spec.dataset)
        head = head_of(spec, dataset)
        loss = training.loss_spec(spec.training, head)
        examples = len(splits.train.targets) * epochs
        rates = {"pipeline": 0.0, "bare": 0.0}
        # Each way twice, in both orders; the best of each counts, so one-time costs of the
        # process (first graph builds, lazy imports) and a noisy neighbour hit neither alone.
        for way in ("pipeline", "bare", "bare", "pipeline"):
            keras.utils.set_random_seed(spec.training.seed)
            model = model_for(spec, dataset, splits)
            training.compile_model(model, spec.optimizer, loss, head, xla=False)
            started = time.perf_counter()
            if way == "pipeline":
                with tempfile.TemporaryDirectory() as run_dir:
                    training.fit(
                        model, splits, spec.training, spec.preprocessing, head, Path(run_dir)
                    )
            else:
                model.fit(
                    splits.train.features,
                    splits.train.targets,
                    batch_size=spec.training.batch_size,
                    epochs=epochs,
                    validation_data=(splits.validation.features, splits.validation.targets),
                    verbose=0,
                )
            rate = examples / (time.perf_counter() - started)
            rates[way] = max(rates[way], rate)
            print(f"{name:<14} {way:<9} {rate:>11.0f}")
        print(f"{name:<14} ratio     {rates['pipeline'] / rates['bare']:>11.2f}")


def accuracy(names: list[str]) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from bench.processes import no_model_server
    from pipeline.flow import retrain

    with (
        tempfile.TemporaryDirectory() as root,
        prefect_test_harness(server_startup_timeout=120),
        no_model_server(),
    ):
        results = []
        for name in names:
            started = time.perf_counter()
            result = retrain(
                str(SPECS / f"{name}.yaml"), model_repo=f"{root}/models", runs_dir=f"{root}/runs"
            )
            results.append((name, result, time.perf_counter() - started))
        print(f"\n{'spec':<16} {'epochs':>6} {'seconds':>8}  test metrics")
        for name, result, seconds in results:
            metrics = result.evaluation.describe()
            print(f"{name:<16} {result.epochs_trained:>6} {seconds:>8.0f}  {metrics}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    speed = commands.add_parser("throughput")
    speed.add_argument("--epochs", type=int, default=10)
    quality = commands.add_parser("accuracy")
    quality.add_argument(
        "--specs", nargs="+", default=["digits-cnn", "digits-lstm", "iris-mlp", "sunspots-lstm"]
    )
    args = parser.parse_args()
    if args.command == "throughput":
        throughput(args.epochs)
    else:
        accuracy(args.specs)


if __name__ == "__main__":
    main()
