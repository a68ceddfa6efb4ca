"""Datasets from installed packages and of the user's own, splits, tf.data pipelines, the epoch
progress bar and the device plan."""

import io

import keras
import numpy as np
import pytest
from PIL import Image

from pipeline.datasets import Dataset, DatasetError, load_dataset, series_dataset
from pipeline.devices import placed, plan_devices
from pipeline.models import Head, build_model
from pipeline.preprocess import Split, Splits, split_dataset, to_tf_dataset
from pipeline.spec import (
    CsvSeriesDataset,
    CsvTableDataset,
    ImageFolderDataset,
    ImageListDataset,
    MlpSpec,
    PackagedDataset,
    PreprocessingSpec,
    TrainingSpec,
)
from pipeline.training import EpochProgress
from service.version_contract import InputSpec


@pytest.mark.parametrize(
    ("name", "input_name", "shape", "task", "classes"),
    [
        ("digits", "image", (8, 8, 1), "classification", 10),
        ("iris", "features", (4,), "classification", 3),
        ("sunspots", "sequence", (12, 1), "regression", 0),
        ("co2", "sequence", (12, 1), "regression", 0),
    ],
)
def test_packaged_datasets(name, input_name, shape, task, classes):
    dataset = load_dataset(PackagedDataset(name=name))
    assert dataset.input_spec.name == input_name and dataset.input_spec.shape == shape
    assert dataset.task == task and dataset.num_classes == classes
    assert len(dataset.features) == len(dataset.targets) > 100
    assert not np.isnan(dataset.features).any()


def test_sliding_windows_forecast_the_value_horizon_steps_ahead():
    dataset = series_dataset(np.arange(20.0), window=3, horizon=2)
    assert dataset.features.shape == (16, 3, 1)
    np.testing.assert_array_equal(dataset.features[0, :, 0], [0, 1, 2])
    assert dataset.targets[0] == 4  # two steps after the window's last value
    assert dataset.input_spec.value_range == (0.0, 19.0)  # what clients' values look like


def test_time_series_are_split_in_time_order():
    spec = PackagedDataset(name="sunspots", test_fraction=0.2, validation_fraction=0.25)
    dataset = load_dataset(spec)
    splits = split_dataset(dataset, spec)
    train, validation = len(splits.train.targets), len(splits.validation.targets)
    np.testing.assert_array_equal(
        splits.validation.features, dataset.features[train : train + validation]
    )
    np.testing.assert_array_equal(splits.test.features, dataset.features[train + validation :])
    assert len(splits.test.targets) == round(len(dataset.targets) * 0.2)


def test_classifier_splits_are_seeded_and_stratified():
    spec = PackagedDataset(name="iris", seed=3)
    first = split_dataset(load_dataset(spec), spec)
    again = split_dataset(load_dataset(spec), spec)
    np.testing.assert_array_equal(first.test.targets, again.test.targets)
    assert np.bincount(first.test.targets).tolist() == [10, 10, 10]


def test_max_examples_keeps_a_seeded_subset():
    dataset = load_dataset(PackagedDataset(name="digits", max_examples=100, seed=1))
    assert len(dataset.targets) == 100
    again = load_dataset(PackagedDataset(name="digits", max_examples=100, seed=1))
    np.testing.assert_array_equal(dataset.features, again.features)


def write_image(path, value: int, size=(6, 5), mode="RGB"):
    Image.new(mode, size, (value, value // 2, 0) if mode == "RGB" else value).save(path)


def test_an_image_folder_has_one_subfolder_per_class(tmp_path):
    for label, value in (("cat", 200), ("dog", 40)):
        (tmp_path / label).mkdir()
        for index in range(3):
            write_image(tmp_path / label / f"{index}.png", value)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    spec = ImageFolderDataset(name="image-folder", path=tmp_path, image_size=(4, 4), channels=3)
    dataset = load_dataset(spec)
    assert dataset.labels == ["cat", "dog"]
    assert dataset.features.shape == (6, 4, 4, 3) and dataset.features.dtype == np.uint8
    assert dataset.features[0, 0, 0].tolist() == [200, 100, 0]
    assert dataset.targets.tolist() == [0, 0, 0, 1, 1, 1]


def test_images_and_a_labels_file(tmp_path):
    for index in range(4):
        write_image(tmp_path / f"img{index}.jpg", 50 * index, mode="L")
    (tmp_path / "labels.txt").write_text(
        "img0.jpg zero\nimg1.jpg one\n\nimg2.jpg zero\nimg3.jpg one\n"
    )
    spec = ImageListDataset(
        name="image-list",
        path=tmp_path,
        labels_file=tmp_path / "labels.txt",
        image_size=(3, 3),
        channels=1,
    )
    dataset = load_dataset(spec)
    assert dataset.labels == ["one", "zero"]
    assert dataset.targets.tolist() == [1, 0, 1, 0]
    assert dataset.features.shape == (4, 3, 3, 1)


def test_a_labels_file_line_without_a_label_is_an_error_naming_the_line(tmp_path):
    (tmp_path / "labels.txt").write_text("a.png cat\nb.png\n")
    spec = ImageListDataset(
        name="image-list", path=tmp_path, labels_file=tmp_path / "labels.txt", image_size=(2, 2)
    )
    with pytest.raises(DatasetError, match=r"labels\.txt:2: expected '<file name> <label>'"):
        load_dataset(spec)


def test_a_csv_table_for_classification_and_regression(tmp_path):
    kinds = tmp_path / "kinds.csv"
    kinds.write_text("a,b,kind\n1,2,x\n3,4,y\n5,6,x\n")
    classes = load_dataset(CsvTableDataset(name="csv-table", path=kinds, target="kind"))
    assert classes.labels == ["x", "y"] and classes.targets.tolist() == [0, 1, 0]
    assert (classes.input_spec.name, classes.input_spec.shape) == ("features", (2,))

    prices = tmp_path / "prices.csv"
    prices.write_text("a,b,price\n1,2,10.5\n3,4,20.0\n5,6,30.5\n")
    spec = CsvTableDataset(name="csv-table", path=prices, target="price", task="regression")
    dataset = load_dataset(spec)
    assert dataset.task == "regression" and dataset.targets.tolist() == [10.5, 20.0, 30.5]


def test_a_table_is_standardized_with_the_training_splits_statistics_alone(tmp_path):
    path = tmp_path / "table.csv"

    def table(sizes: np.ndarray) -> tuple[Dataset, Splits]:
        rows = "".join(f"{size},7,{'xy'[row % 2]}\n" for row, size in enumerate(sizes))
        path.write_text("size,flag,kind\n" + rows)
        spec = CsvTableDataset(name="csv-table", path=path, target="kind")
        dataset = load_dataset(spec)
        return dataset, split_dataset(dataset, spec)

    # The seeded split depends on the labels alone: with row numbers for sizes, it tells which
    # rows it holds out; those then get sizes a thousand times the training rows'.
    _, numbered = table(np.arange(200))
    held_out = np.concatenate([numbered.validation.features, numbered.test.features])[:, 0]
    sizes = np.random.default_rng(0).normal(10.0, 2.0, size=200)
    sizes[held_out.astype(int)] *= 1000
    dataset, splits = table(sizes)
    assert splits.train.features[:, 0].max() < 100 < splits.test.features[:, 0].min()

    model = build_model(
        MlpSpec(architecture="mlp", units=[4]),
        dataset.input_spec,
        Head(num_classes=2),
        training_features=splits.train.features,
    )
    standardize = model.get_layer("standardize")
    train = np.asarray(standardize(splits.train.features), np.float64)
    np.testing.assert_allclose(train[:, 0].mean(), 0.0, atol=1e-4)
    np.testing.assert_allclose(train[:, 0].std(), 1.0, atol=1e-4)
    # `flag` is 7 in every training row: centred, not divided by its zero spread.
    np.testing.assert_allclose(standardize(np.array([[10.0, 9.0]], "float32"))[0, 1], 2.0)


def test_a_csv_table_with_text_features_or_no_such_target_is_an_error(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("a,colour,kind\n1,red,x\n2,blue,y\n")
    with pytest.raises(DatasetError, match=r"\['colour'\] are not"):
        load_dataset(CsvTableDataset(name="csv-table", path=path, target="kind"))
    with pytest.raises(DatasetError, match=r"no column 'label'; the columns are"):
        load_dataset(CsvTableDataset(name="csv-table", path=path, target="label"))


def test_a_csv_time_series(tmp_path):
    path = tmp_path / "series.csv"
    path.write_text("day,visitors\n" + "".join(f"{d},{d * 2}\n" for d in range(30)))
    dataset = load_dataset(
        CsvSeriesDataset(name="csv-series", path=path, column="visitors", window=5)
    )
    assert dataset.features.shape == (25, 5, 1) and dataset.targets[0] == 10.0
    assert dataset.ordered


def test_one_hot_labels_and_batches():
    split = Split(np.zeros((5, 2), "float32"), np.array([0, 2, 1, 2, 0]))
    batches = list(
        to_tf_dataset(split, 2, None, PreprocessingSpec(labels="one-hot"), num_classes=3)
    )
    assert [len(x) for x, _ in batches] == [2, 2, 1]
    np.testing.assert_array_equal(batches[0][1].numpy(), [[1, 0, 0], [0, 0, 1]])


def test_shuffling_is_seeded():
    split = Split(np.arange(50, dtype="float32")[:, None], np.arange(50))
    orders = [
        np.concatenate([y.numpy() for _, y in to_tf_dataset(split, 10, shuffle_seed=5)])
        for _ in range(2)
    ]
    np.testing.assert_array_equal(orders[0], orders[1])
    assert orders[0].tolist() != list(range(50))


def test_the_progress_bar_writes_one_finished_line_per_epoch_to_a_pipe():
    stream = io.StringIO()
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(
        np.zeros((6, 2)),
        np.zeros(6),
        batch_size=2,
        epochs=2,
        verbose=0,
        callbacks=[EpochProgress(stream, width=10)],
    )
    lines = stream.getvalue().splitlines()
    assert [line.split(" [")[0] for line in lines] == ["epoch   1/2", "epoch   2/2"]
    assert all("[##########] 3/3" in line and "loss 0.0000" in line for line in lines)


def test_devices_are_planned_from_what_is_present():
    wanted = TrainingSpec(epochs=1, mixed_precision=True, xla=True)
    assert plan_devices(wanted, gpus=0) == plan_devices(wanted)  # this machine: CPU only
    cpu = plan_devices(wanted, gpus=0)
    assert (cpu.strategy, cpu.mixed_precision, cpu.xla) == ("default", False, True)
    one = plan_devices(wanted, gpus=1)
    assert (one.strategy, one.mixed_precision) == ("default", True)
    several = plan_devices(TrainingSpec(epochs=1), gpus=4)
    assert (several.strategy, several.mixed_precision, several.xla) == ("mirrored", False, False)


def test_mixed_precision_computes_in_float16_with_float32_outputs_and_is_undone_after():
    plan = plan_devices(TrainingSpec(epochs=1, mixed_precision=True), gpus=1)
    table = InputSpec("features", (2,), "float32", (0, 1))
    with placed(plan):
        model = build_model(
            MlpSpec(architecture="mlp", units=[4]),
            table,
            Head(num_classes=2),
            training_features=np.array([[0, 0], [1, 1]], "float32"),
        )
    assert model.get_layer("dense1").compute_dtype == "float16"
    assert model.get_layer("probabilities").compute_dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"
