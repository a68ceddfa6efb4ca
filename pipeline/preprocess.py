"""Seeded splits and the tf.data pipelines that feed training."""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from sklearn.model_selection import train_test_split

from pipeline.datasets import Dataset
from pipeline.spec import DatasetSpec


@dataclass(frozen=True)
class Split:
    features: np.ndarray
    targets: np.ndarray


@dataclass(frozen=True)
class Splits:
    train: Split
    validation: Split
    test: Split


def split_dataset(dataset: Dataset, spec: DatasetSpec) -> Splits:
    """Stratified train/validation/test split; the same seed always gives the same split."""
    x_rest, x_test, y_rest, y_test = train_test_split(
        dataset.features,
        dataset.targets,
        test_size=spec.test_fraction,
        random_state=spec.seed,
        stratify=dataset.targets,
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest,
        y_rest,
        test_size=spec.validation_fraction,
        random_state=spec.seed,
        stratify=y_rest,
    )
    return Splits(Split(x_train, y_train), Split(x_val, y_val), Split(x_test, y_test))


def to_tf_dataset(
    split: Split, batch_size: int, shuffle_seed: int | None = None
) -> tf.data.Dataset:
    """Batches of (features, targets); shuffled each epoch when a seed is given."""
    data = tf.data.Dataset.from_tensor_slices((split.features, split.targets)).cache()
    if shuffle_seed is not None:
        data = data.shuffle(len(split.targets), seed=shuffle_seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)
