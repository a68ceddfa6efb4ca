"""Datasets as numpy arrays in raw units, with the description of the input a model serves
(service/version_contract.py's InputSpec)."""

import gzip
import hashlib
import io
import logging
import pickle
import tarfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from pipeline import data_checks, downloads
from pipeline.data_checks import ImageFile
from pipeline.spec import (
    CsvSeriesDataset,
    CsvTableDataset,
    CsvTextDataset,
    DatasetChecks,
    DatasetSpec,
    DownloadedDataset,
    ImageFolderDataset,
    ImageListDataset,
    PackagedDataset,
)
from service.version_contract import PIXEL_MAX, UNREADABLE_IMAGE, InputSpec, image_to_input

Task = Literal["classification", "regression"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset that cannot be read, with what was wrong and what was expected."""


@dataclass(frozen=True)
class Dataset:
    features: np.ndarray
    targets: np.ndarray
    labels: list[str]  # class names by class id; empty for regressors
    input_spec: InputSpec
    task: Task = "classification"
    # Time series keep their order: validation and test are the latest windows.
    ordered: bool = False
    # Where each example came from, for messages ("labels.txt:12: a.png"); () when unnamed.
    sources: tuple[str, ...] = ()
    # Each image file as read, before it was resized and converted; () for other datasets.
    image_files: tuple[ImageFile, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for array in (self.features, self.targets):
            digest.update(str((array.dtype, array.shape)).encode())
            if array.dtype == object:  # texts: the bytes of each, not the objects' addresses
                for text in array:
                    encoded = str(text).encode()
                    digest.update(len(encoded).to_bytes(8, "big") + encoded)
            else:
                digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


def load_dataset(spec: DatasetSpec, logger: data_checks.Log = log) -> Dataset:
    """The dataset, checked (pipeline/data_checks.py) and summarized in `logger`'s log.

    Raises DatasetError when it cannot be read, or when a check the spec makes an error finds
    something.
    """
    dataset = _read(spec)
    logger.info(
        data_checks.summary(
            spec.name, dataset.targets, dataset.labels, dataset.input_spec, dataset.image_files
        )
    )
    findings = data_checks.check_examples(
        dataset.targets, dataset.labels, dataset.sources, dataset.image_files, spec.checks
    )
    enforce_checks(findings, spec.checks, logger)
    return dataset


def enforce_checks(
    findings: list[data_checks.Finding],
    checks: DatasetChecks,
    logger: data_checks.Log,
) -> None:
    """Log the findings the spec makes warnings; raise DatasetError for those it makes errors."""
    problem = data_checks.enforce(findings, checks, logger)
    if problem is not None:
        raise DatasetError(problem)


def _read(spec: DatasetSpec) -> Dataset:
    if isinstance(spec, PackagedDataset):
        dataset = _PACKAGED[spec.name](spec)
    elif isinstance(spec, DownloadedDataset):
        dataset = _download(spec)
    elif isinstance(spec, ImageFolderDataset):
        dataset = _image_folder(spec)
    elif isinstance(spec, ImageListDataset):
        dataset = _image_list(spec)
    elif isinstance(spec, CsvTableDataset):
        dataset = _csv_table(spec)
    elif isinstance(spec, CsvTextDataset):
        dataset = _csv_text(spec)
    else:
        dataset = _csv_series(spec)
    return _limit(dataset, spec.max_examples, spec.seed)


def _limit(dataset: Dataset, max_examples: int | None, seed: int) -> Dataset:
    if max_examples is None or max_examples >= len(dataset.targets):
        return dataset
    if dataset.ordered:
        keep = np.arange(len(dataset.targets) - max_examples, len(dataset.targets))
    else:
        keep = np.sort(np.random.default_rng(seed).permutation(len(dataset.targets))[:max_examples])
    return replace(
        dataset,
        features=dataset.features[keep],
        targets=dataset.targets[keep],
        sources=tuple(dataset.sources[i] for i in keep) if dataset.sources else (),
        image_files=tuple(dataset.image_files[i] for i in keep) if dataset.image_files else (),
    )


# --- the constructors every source ends in -------------------------------------------------------


def image_dataset(images: np.ndarray, targets: np.ndarray, labels: list[str]) -> Dataset:
    """Images as (count, height, width, channels) pixel values; uint8 means 0..255.

    Arrays keep their compact dtype; the served input is float32 pixel values either way, as
    clients and the gateway's image upload send them.
    """
    if images.ndim == 3:
        images = images[..., np.newaxis]
    value_range = (
        (0.0, 255.0) if images.dtype == np.uint8 else (float(images.min()), float(images.max()))
    )
    return Dataset(
        features=images,
        targets=targets.astype(np.int64).reshape(-1),
        labels=labels,
        input_spec=InputSpec("image", images.shape[1:], "float32", value_range),
    )


def table_dataset(
    features: np.ndarray, targets: np.ndarray, labels: list[str], task: Task
) -> Dataset:
    features = features.astype(np.float32)
    return Dataset(
        features=features,
        targets=targets.astype(np.int64 if task == "classification" else np.float32),
        labels=labels if task == "classification" else [],
        input_spec=InputSpec(
            "features",
            features.shape[1:],
            "float32",
            (float(features.min()), float(features.max())),
        ),
        task=task,
    )


def series_dataset(values: np.ndarray, window: int, horizon: int) -> Dataset:
    """Sliding windows: `window` past values in, the value `horizon` steps later out."""
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    count = len(values) - window - horizon + 1
    if count < 10:
        raise DatasetError(
            f"a series of {len(values)} values gives only {max(count, 0)} windows of "
            f"{window} + horizon {horizon}; expected at least 10"
        )
    starts = np.arange(count)
    windows = values[starts[:, None] + np.arange(window)][..., np.newaxis]
    targets = values[starts + window + horizon - 1]
    value_range = (float(values.min()), float(values.max()))
    return Dataset(
        features=windows,
        targets=targets,
        labels=[],
        input_spec=InputSpec("sequence", (window, 1), "float32", value_range),
        task="regression",
        ordered=True,
    )


def token_dataset(
    sequences: list, targets: np.ndarray, labels: list[str], vocabulary_size: int, length: int
) -> Dataset:
    """Token id lists padded (at the front, as Keras does) or cut to `length`; rare ids -> 2."""
    padded = np.zeros((len(sequences), length), dtype=np.int32)
    for row, sequence in enumerate(sequences):
        tail = np.asarray(sequence[-length:], dtype=np.int64)
        if len(tail):
            padded[row, -len(tail) :] = tail
    return Dataset(
        features=padded,
        targets=targets.astype(np.int64).reshape(-1),
        labels=labels,
        input_spec=InputSpec(
            "sequence",
            (length,),
            "int32",
            (0.0, float(padded.max())),
            vocabulary_size=vocabulary_size,
            sequence_length=length,
        ),
    )


def text_dataset(
    texts: np.ndarray, targets: np.ndarray, labels: list[str], vocabulary_size: int, length: int
) -> Dataset:
    """Raw strings, one per example; the model tokenizes them into `length` word ids."""
    return Dataset(
        features=np.asarray(texts, dtype=object),
        targets=targets.astype(np.int64).reshape(-1),
        labels=labels,
        input_spec=InputSpec(
            "text", (), "string", vocabulary_size=vocabulary_size, sequence_length=length
        ),
    )


# --- datasets in installed packages --------------------------------------------------------------


def _digits(spec: PackagedDataset) -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # The images hold counts 0..16 per pixel; they stay in those units: scaling is in the graph.
    dataset = image_dataset(
        digits.images.astype(np.float32), digits.target, [str(n) for n in digits.target_names]
    )
    return replace(dataset, input_spec=replace(dataset.input_spec, value_range=(0.0, 16.0)))


def _iris(spec: PackagedDataset) -> Dataset:
    from sklearn.datasets import load_iris

    iris = load_iris()
    return table_dataset(iris.data, iris.target, list(iris.target_names), "classification")


def _sunspots(spec: PackagedDataset) -> Dataset:
    from statsmodels.datasets import sunspots

    values = sunspots.load_pandas().data["SUNACTIVITY"].to_numpy()
    return series_dataset(values, spec.window, spec.horizon)


def _co2(spec: PackagedDataset) -> Dataset:
    from statsmodels.datasets import co2

    # Weekly readings with gaps: the gaps take the previous week's value.
    values = co2.load_pandas().data["co2"].ffill().bfill().to_numpy()
    return series_dataset(values, spec.window, spec.horizon)


_PACKAGED = {"digits": _digits, "iris": _iris, "sunspots": _sunspots, "co2": _co2}


# --- downloaded datasets, in their upstream formats ----------------------------------------------

FASHION_LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def _download(spec: DownloadedDataset) -> Dataset:
    canonical_source, files = downloads.CATALOG[spec.name]
    if spec.checksums is not None:
        unknown = set(spec.checksums) - {remote.name for remote in files}
        if unknown:
            raise DatasetError(
                f"dataset.checksums names {sorted(unknown)}; {spec.name} has the files "
                f"{[remote.name for remote in files]}"
            )
        files = tuple(
            downloads.RemoteFile(r.name, spec.checksums.get(r.name, r.sha256)) for r in files
        )
    cache_dir = spec.cache_dir or downloads.default_cache_dir()
    paths = [
        downloads.fetch(spec.source or canonical_source, remote, cache_dir, spec.retries)
        for remote in files
    ]
    if spec.name == "mnist":
        arrays = _load_npz(paths[0])
        return image_dataset(
            np.concatenate([arrays["x_train"], arrays["x_test"]]),
            np.concatenate([arrays["y_train"], arrays["y_test"]]),
            [str(digit) for digit in range(10)],
        )
    if spec.name == "fashion-mnist":
        train_labels, train_images, test_labels, test_images = (read_idx(p) for p in paths)
        return image_dataset(
            np.concatenate([train_images, test_images]),
            np.concatenate([train_labels, test_labels]),
            FASHION_LABELS,
        )
    if spec.name == "cifar10":
        return _cifar10(paths[0])
    if spec.name == "imdb":
        arrays = _load_npz(paths[0])
        sequences = [list(s) for s in (*arrays["x_train"], *arrays["x_test"])]
        return token_dataset(
            sequences,
            np.concatenate([arrays["y_train"], arrays["y_test"]]),
            ["negative", "positive"],
            spec.vocabulary_size,
            spec.sequence_length,
        )
    arrays = _load_npz(paths[0])  # boston-housing
    return table_dataset(arrays["x"], arrays["y"], [], "regression")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format), gzip-compressed: magic, dimensions, then unsigned bytes."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DatasetError(f"{path}: not an IDX file of unsigned bytes")
    dimensions = data[3]
    header = 4 + 4 * dimensions
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dimensions))
    values = np.frombuffer(data, dtype=np.uint8, offset=header)
    if values.size != int(np.prod(shape)):
        raise DatasetError(f"{path}: header says {shape}, file holds {values.size} values")
    return values.reshape(shape)


def _cifar10(path: Path) -> Dataset:
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    images, targets = [], []
    with tarfile.open(path, "r:gz") as archive:
        meta = _restricted_load(archive.extractfile("cifar-10-batches-py/batches.meta").read())
        for name in batches:
            batch = _restricted_load(archive.extractfile(f"cifar-10-batches-py/{name}").read())
            # Rows hold the red plane, then green, then blue, each 32x32.
            images.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32))
            targets.append(np.asarray(batch[b"labels"]))
    labels = [name.decode() for name in meta[b"label_names"]]
    return image_dataset(
        np.concatenate(images).transpose(0, 2, 3, 1), np.concatenate(targets), labels
    )


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Pickles in dataset files may rebuild numpy arrays and nothing else."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise DatasetError(f"dataset file holds a pickled {module}.{name}; only arrays allowed")
        return super().find_class(module, name)


def _restricted_load(data: bytes):
    return _ArraysOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz; object arrays (IMDB's ragged lists) pass the restricted unpickler."""
    arrays = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            with archive.open(member) as handle:
                version = np.lib.format.read_magic(handle)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                _, _, dtype = read_header(handle)
                if dtype.hasobject:
                    array = _ArraysOnlyUnpickler(handle, encoding="latin1").load()
                else:
                    array = np.lib.format.read_array(archive.open(member))
            arrays[member.removesuffix(".npy")] = array
    return arrays


# --- the user's own data -------------------------------------------------------------------------


def _read_image(path: Path, size: tuple[int, int], channels: int) -> tuple[np.ndarray, ImageFile]:
    """The image's 8-bit pixels, made as the gateway makes an upload of the same file, and
    the file's own size and mode."""
    pixels = InputSpec("image", (*size, channels), "float32", (0.0, PIXEL_MAX))
    try:
        with Image.open(path) as image:
            # In the pixels' own range the values are whole numbers: uint8 keeps them compact.
            converted = image_to_input(image, pixels).astype(np.uint8)
            return converted, ImageFile(image.width, image.height, image.mode)
    except UNREADABLE_IMAGE as error:
        raise DatasetError(f"{path}: not a readable image ({error})") from error


def _images_dataset(
    paths: list[Path],
    targets: list[int],
    labels: list[str],
    sources: list[str],
    spec: ImageFolderDataset | ImageListDataset,
) -> Dataset:
    if not paths:
        raise DatasetError(
            f"dataset.path {spec.path}: no image files; expected some ending in "
            f"{', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    images, image_files = zip(
        *(_read_image(path, spec.image_size, spec.channels) for path in paths), strict=True
    )
    dataset = image_dataset(np.stack(images), np.array(targets), labels)
    return replace(dataset, sources=tuple(sources), image_files=image_files)


def _image_folder(spec: ImageFolderDataset) -> Dataset:
    classes = sorted(entry.name for entry in spec.path.iterdir() if entry.is_dir())
    if len(classes) < 2:
        raise DatasetError(
            f"dataset.path {spec.path}: expected one subfolder per class, found {classes}"
        )
    paths, targets = [], []
    for class_id, name in enumerate(classes):
        files = sorted(
            p for p in (spec.path / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
        )
        paths += files
        targets += [class_id] * len(files)
    return _images_dataset(paths, targets, classes, [str(path) for path in paths], spec)


def _image_list(spec: ImageListDataset) -> Dataset:
    try:
        lines = spec.labels_file.read_text().splitlines()
    except OSError as error:
        raise DatasetError(f"dataset.labels_file {spec.labels_file}: {error.strerror}") from error
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise DatasetError(
                f"{spec.labels_file}:{number}: expected '<file name> <label>', got {line!r}"
            )
        entries.append((number, parts[0], parts[1]))
    classes = sorted({label for _, _, label in entries})
    return _images_dataset(
        [spec.path / name for _, name, _ in entries],
        [classes.index(label) for _, _, label in entries],
        classes,
        [f"{spec.labels_file}:{number}: {name} {label}" for number, name, label in entries],
        spec,
    )


def _read_csv(path: Path, *columns: str):
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as error:
        raise DatasetError(f"dataset.path {path}: cannot read CSV ({error})") from error
    for column in columns:
        if column not in table.columns:
            raise DatasetError(
                f"{path}: no column {column!r}; the columns are {list(table.columns)}"
            )
    return table


def _class_ids(column) -> tuple[list[str], np.ndarray]:
    """Class names in sorted order, and each row's index into them."""
    classes = sorted(str(value) for value in column.unique())
    ids = {name: index for index, name in enumerate(classes)}
    return classes, np.array([ids[str(value)] for value in column])


def _csv_table(spec: CsvTableDataset) -> Dataset:
    table = _read_csv(spec.path, spec.target)
    features = table.drop(columns=[spec.target])
    text_columns = [name for name in features.columns if features[name].dtype.kind not in "biuf"]
    if text_columns:
        raise DatasetError(f"{spec.path}: feature columns must be numbers; {text_columns} are not")
    if spec.task == "classification":
        classes, targets = _class_ids(table[spec.target])
        dataset = table_dataset(features.to_numpy(), targets, classes, "classification")
    else:
        targets = table[spec.target].to_numpy()
        dataset = table_dataset(features.to_numpy(), targets, [], "regression")
    return replace(dataset, sources=_rows(spec.path, len(table)))


def _rows(path: Path, count: int) -> tuple[str, ...]:
    return tuple(f"{path} row {row}" for row in range(1, count + 1))


def _csv_text(spec: CsvTextDataset) -> Dataset:
    table = _read_csv(spec.path, spec.text, spec.target)
    empty = table[[spec.text, spec.target]].isna().any(axis=1)
    if empty.any():
        rows = [int(index) + 1 for index in table.index[empty][:5]]
        raise DatasetError(
            f"{spec.path}: every row needs a {spec.text!r} and a {spec.target!r}; "
            f"rows {rows} (counted from 1 below the header) lack one"
        )
    classes, targets = _class_ids(table[spec.target])
    texts = table[spec.text].astype(str).to_numpy(dtype=object)
    dataset = text_dataset(texts, targets, classes, spec.vocabulary_size, spec.sequence_length)
    return replace(dataset, sources=_rows(spec.path, len(table)))


def _csv_series(spec: CsvSeriesDataset) -> Dataset:
    table = _read_csv(spec.path, spec.column)
    values = table[spec.column]
    if values.dtype.kind not in "biuf" or values.isna().any():
        raise DatasetError(f"{spec.path}: column {spec.column!r} must hold a number in every row")
    return series_dataset(values.to_numpy(), spec.window, spec.horizon)
