"""Regressors on a CSV table and on a CSV series, trained through the real Prefect flow on data
whose rows the training split never sees are a thousand times larger: the output range, and a
series model's input scaling, come from the training split alone; the metadata still tells
clients the range of the values the dataset holds."""

import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest
from support import retrain_without_model_server

from pipeline.datasets import Dataset, load_dataset
from pipeline.outcome import RetrainResult
from pipeline.preprocess import Splits, split_dataset
from pipeline.spec import load_spec

ROWS = 120
KINDS = {
    "table": (
        "{name: csv-table, path: PATH, target: price, task: regression}",
        "{architecture: mlp, units: [4]}",
    ),
    "series": (
        "{name: csv-series, path: PATH, column: price, window: 4}",
        "{architecture: rnn-stack, cell: gru, units: [4]}",
    ),
}


@dataclass(frozen=True)
class Run:
    result: RetrainResult
    dataset: Dataset
    splits: Splits
    prices: np.ndarray  # every value of the CSV's price column


def write_prices(path: Path, kind: str, prices: np.ndarray) -> None:
    """A table of (row number, price) rows, or a series of prices."""
    if kind == "table":
        path.write_text("row,price\n" + "".join(f"{r},{p}\n" for r, p in enumerate(prices)))
    else:
        path.write_text("price\n" + "".join(f"{p}\n" for p in prices))


@pytest.fixture(scope="module")
def held_out_runs(prefect_api, tmp_path_factory):
    """Trains each kind once, on first use, and keeps the run for every test that asks."""
    root = tmp_path_factory.mktemp("regressors")
    done = {}

    def run(kind: str) -> Run:
        if kind not in done:
            data, spec_path = root / f"{kind}.csv", root / f"{kind}.yaml"
            dataset_document, model_document = KINDS[kind]
            spec_path.write_text(
                f"name: prices-{kind}\n"
                f"dataset: {dataset_document.replace('PATH', str(data))}\n"
                f"model: {model_document}\n"
                "training: {epochs: 1}\n"
            )
            # The split depends on the number of rows alone (tables are split by a seeded
            # permutation, series in time order): with row numbers for prices, the training
            # split's inputs and targets name the rows it sees.
            write_prices(data, kind, np.arange(ROWS))
            spec = load_spec(spec_path)
            numbered = split_dataset(load_dataset(spec.dataset), spec.dataset)
            seen = np.concatenate([numbered.train.features.ravel(), numbered.train.targets])
            prices = np.random.default_rng(0).normal(50.0, 10.0, ROWS).round(3)
            prices[np.setdiff1d(np.arange(ROWS), seen.astype(int))] *= 1000
            write_prices(data, kind, prices)

            dataset = load_dataset(spec.dataset)
            splits = split_dataset(dataset, spec.dataset)
            assert splits.train.targets.max() < 1000 < splits.test.targets.min()
            result = retrain_without_model_server(
                spec_path, model_repo=str(root / "models"), runs_dir=str(root / "runs")
            )
            done[kind] = Run(result, dataset, splits, prices)
        return done[kind]

    return run


def trained_model(run: Run) -> keras.Model:
    return keras.saving.load_model(run.result.run_dir / "model.keras")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_regressor_predicts_in_the_training_targets_range(held_out_runs, kind):
    run = held_out_runs(kind)
    # The network's 0 and 1 are the training targets' smallest and largest, in target units.
    ends = trained_model(run).get_layer("prediction")(np.array([[0.0], [1.0]], "float32"))
    targets = run.splits.train.targets
    np.testing.assert_allclose(np.ravel(ends), [targets.min(), targets.max()], rtol=1e-6)


def test_a_series_model_scales_its_input_by_the_training_windows_alone(held_out_runs):
    run = held_out_runs("series")
    scale = trained_model(run).get_layer("scale_to_unit")
    scaled = np.asarray(scale(run.splits.train.features))
    assert (scaled.min(), scaled.max()) == pytest.approx((0.0, 1.0), abs=1e-6)
    # Held-out windows lie beyond 0..1, as a client's values outside the training range do.
    assert np.asarray(scale(run.splits.test.features)).max() > 100


def test_the_metadata_gives_clients_the_range_of_the_values_the_series_holds(held_out_runs):
    """The value range describes what clients send, held-out values included; the model's
    scaling is its own, from the training split."""
    run = held_out_runs("series")
    metadata = json.loads((run.result.version_dir / "assets.extra" / "nnserve.json").read_text())
    assert metadata["input"]["value_range"] == pytest.approx([run.prices.min(), run.prices.max()])
