"""Seeded splits and the tf.data pipelines that feed training."""

import logging
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from sklearn.model_selection import train_test_split

from pipeline import data_checks
from pipeline.datasets import Dataset, enforce_checks
from pipeline.spec import DatasetSpec, PreprocessingSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    features: np.ndarray
    targets: np.ndarray


@dataclass(frozen=True)
class Splits:
    train: Split
    validation: Split
    test: Split


def split_dataset(
    dataset: Dataset,
    spec: DatasetSpec,
    logger: data_checks.Log = log,
) -> Splits:
    """Train/validation/test; the same seed always gives the same split.

    Classes keep their proportions in every split; time series are cut in time order, so the
    model is validated and tested on the latest windows, never on the past it was trained after.
    An example in two splits (not looked for in series, whose windows overlap by design) is
    reported in `logger`'s log, or raises DatasetError, as `spec.checks.split_duplicates` says.
    """
    if dataset.ordered:
        count = len(dataset.targets)
        test_start = count - max(1, round(count * spec.test_fraction))
        validation_start = test_start - max(1, round(test_start * spec.validation_fraction))
        parts = np.split(np.arange(count), [validation_start, test_start])
        train, validation, test = (
            Split(dataset.features[part], dataset.targets[part]) for part in parts
        )
        return Splits(train, validation, test)
    classify = dataset.task == "classification"
    x_rest, x_test, y_rest, y_test = _split(
        dataset.features, dataset.targets, spec.test_fraction, spec.seed, classify
    )
    x_train, x_val, y_train, y_val = _split(
        x_rest, y_rest, spec.validation_fraction, spec.seed, classify
    )
    if spec.checks.split_duplicates != "off":
        splits = {"training": x_train, "validation": x_val, "test": x_test}
        findings = data_checks.split_duplicates(dataset.features, splits, dataset.sources)
        enforce_checks(findings, spec.checks, logger)
    return Splits(Split(x_train, y_train), Split(x_val, y_val), Split(x_test, y_test))


def _split(features, targets, fraction: float, seed: int, stratify: bool):
    try:
        return train_test_split(
            features,
            targets,
            test_size=fraction,
            random_state=seed,
            stratify=targets if stratify else None,
        )
    except ValueError:
        # Too few examples of some class to put one on each side: a plain seeded split.
        return train_test_split(features, targets, test_size=fraction, random_state=seed)


def to_tf_dataset(
    split: Split,
    batch_size: int,
    shuffle_seed: int | None = None,
    preprocessing: PreprocessingSpec | None = None,
    num_classes: int = 0,
) -> tf.data.Dataset:
    """Batches of (features, targets); shuffled each epoch when a seed is given.

    Features stay in raw units: scaling and augmentation are layers of the model itself, so the
    served graph does them too.
    """
    preprocessing = preprocessing or PreprocessingSpec()
    targets = split.targets
    if preprocessing.labels == "one-hot" and num_classes:
        targets = np.eye(num_classes, dtype=np.float32)[targets]
    data = tf.data.Dataset.from_tensor_slices((split.features, targets))
    if preprocessing.cache:
        data = data.cache()
    if shuffle_seed is not None:
        buffer = preprocessing.shuffle_buffer or len(split.targets)
        data = data.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)
