"""Compile and fit (with checkpoints to resume from), and evaluate on the test split."""

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import keras
import numpy as np
from keras import ops

from pipeline.models import Head
from pipeline.preprocess import Split, Splits, to_tf_dataset
from pipeline.spec import (
    EarlyStoppingSpec,
    LossSpec,
    OptimizerSpec,
    PreprocessingSpec,
    TrainingSpec,
)

CHECKPOINT_DIR = "checkpoint"
HISTORY_FILE = "history.csv"
TENSORBOARD_DIR = "tensorboard"


@dataclass(frozen=True)
class Evaluation:
    """Test-split metrics: accuracy for classifiers, mean absolute error for regressors."""

    loss: float
    accuracy: float | None = None
    mae: float | None = None

    def to_json(self) -> dict[str, float]:
        metrics = {"test_loss": self.loss}
        if self.accuracy is not None:
            metrics["test_accuracy"] = self.accuracy
        if self.mae is not None:
            metrics["test_mae"] = self.mae
        return metrics

    @classmethod
    def from_json(cls, metrics: dict) -> "Evaluation":
        """The inverse of `to_json`: metrics as nnserve.json records them."""
        return cls(metrics["test_loss"], metrics.get("test_accuracy"), metrics.get("test_mae"))

    def describe(self) -> str:
        if self.accuracy is not None:
            return f"test accuracy {self.accuracy:.4f}, test loss {self.loss:.4f}"
        return f"test mean absolute error {self.mae:.4f}, test loss {self.loss:.4f}"


@keras.saving.register_keras_serializable(package="nnserve")
class AsymmetricCost(keras.losses.Loss):
    """Mean cost of forecast errors: each unit too high costs over_price, too low under_price."""

    def __init__(self, over_price: float = 1.0, under_price: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.over_price = over_price
        self.under_price = under_price

    def call(self, y_true, y_pred):
        y_true = ops.reshape(ops.cast(y_true, y_pred.dtype), ops.shape(y_pred))
        error = y_pred - y_true
        cost = self.over_price * ops.relu(error) + self.under_price * ops.relu(-error)
        return ops.mean(cost, axis=-1)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "over_price": self.over_price,
            "under_price": self.under_price,
        }


def make_learning_rate(spec: OptimizerSpec) -> float | keras.optimizers.schedules.ExponentialDecay:
    rate = spec.learning_rate
    if isinstance(rate, float):
        return rate
    return keras.optimizers.schedules.ExponentialDecay(
        rate.initial_rate, rate.decay_steps, rate.decay_rate, staircase=rate.staircase
    )


def make_optimizer(spec: OptimizerSpec) -> keras.optimizers.Optimizer:
    rate = make_learning_rate(spec)
    if spec.name == "sgd":
        return keras.optimizers.SGD(rate, momentum=spec.momentum, nesterov=spec.nesterov)
    if spec.name == "rmsprop":
        return keras.optimizers.RMSprop(rate, momentum=spec.momentum)
    if spec.name == "adagrad":
        return keras.optimizers.Adagrad(rate)
    return keras.optimizers.Adam(rate)


def loss_spec(training: TrainingSpec, head: Head) -> LossSpec:
    if training.loss is not None:
        return training.loss
    return LossSpec(name="sparse_categorical_crossentropy" if head.is_classifier else "mse")


def make_loss(spec: LossSpec) -> keras.losses.Loss:
    if spec.name == "asymmetric":
        return AsymmetricCost(spec.over_price, spec.under_price)
    if spec.name == "mse":
        return keras.losses.MeanSquaredError()
    if spec.name == "categorical_crossentropy":
        return keras.losses.CategoricalCrossentropy(from_logits=spec.from_logits)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=spec.from_logits)


def compile_model(
    model: keras.Model, optimizer: OptimizerSpec, loss: LossSpec, head: Head, xla: bool
) -> None:
    if head.is_classifier:
        accuracy = (
            keras.metrics.CategoricalAccuracy(name="accuracy")
            if loss.name == "categorical_crossentropy"
            else keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        )
        metrics = [accuracy]
    else:
        metrics = [keras.metrics.MeanAbsoluteError(name="mae")]
    model.compile(
        optimizer=make_optimizer(optimizer),
        loss=make_loss(loss),
        metrics=metrics,
        jit_compile=xla,
    )


def fit(
    model: keras.Model,
    splits: Splits,
    training: TrainingSpec,
    preprocessing: PreprocessingSpec,
    head: Head,
    run_dir: Path,
    progress: bool = False,
) -> keras.callbacks.History:
    """Fit a compiled model. A checkpoint after every epoch lets a killed run resume where it
    stopped (weights, optimizer state and epoch count); a finished run removes it."""

    def batches(split: Split, shuffle_seed: int | None = None):
        return to_tf_dataset(
            split, training.batch_size, shuffle_seed, preprocessing, head.num_classes
        )

    callbacks = [
        keras.callbacks.BackupAndRestore(str(run_dir / CHECKPOINT_DIR), double_checkpoint=True),
        # append: a resumed run adds its epochs to those the killed one already logged.
        keras.callbacks.CSVLogger(str(run_dir / HISTORY_FILE), append=True),
        keras.callbacks.TensorBoard(str(run_dir / TENSORBOARD_DIR)),
    ]
    if training.early_stopping is not None:
        callbacks.append(_early_stopping(training.early_stopping))
    if progress:
        callbacks.append(EpochProgress())
    return model.fit(
        batches(splits.train, shuffle_seed=training.seed),
        validation_data=batches(splits.validation),
        epochs=training.epochs,
        shuffle=False,  # the tf.data pipeline shuffles, with the spec's seed
        callbacks=callbacks,
        verbose=0 if progress else 2,
    )


class EpochProgress(keras.callbacks.Callback):
    """A bar per epoch that fills as batches finish (in place on a terminal), ending in the
    epoch's metrics; where output goes to a file or pipe, only the finished line is written."""

    def __init__(self, stream: TextIO | None = None, width: int = 30):
        super().__init__()
        self.stream = stream or sys.stdout
        self.width = width
        self.live = self.stream.isatty()

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.epoch = epoch
        self.started = time.monotonic()

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        if self.live:
            self.stream.write("\r" + self._line(batch + 1))
            self.stream.flush()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        metrics = "  ".join(f"{name} {value:.4f}" for name, value in (logs or {}).items())
        steps = self.params.get("steps") or 0
        self.stream.write(("\r" if self.live else "") + self._line(steps) + f"  {metrics}\n")
        self.stream.flush()

    def _line(self, done: int) -> str:
        steps = self.params.get("steps") or max(done, 1)
        filled = round(self.width * min(done, steps) / steps)
        elapsed = time.monotonic() - self.started
        return (
            f"epoch {self.epoch + 1:>3}/{self.params['epochs']} "
            f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{steps} {elapsed:5.1f}s"
        )


def _early_stopping(spec: EarlyStoppingSpec) -> keras.callbacks.EarlyStopping:
    return keras.callbacks.EarlyStopping(
        monitor=spec.monitor,
        patience=spec.patience,
        min_delta=spec.min_delta,
        restore_best_weights=spec.restore_best_weights,
    )


def predict(model: keras.Model, features: np.ndarray, head: Head) -> np.ndarray:
    """Class probabilities for classifiers (softmax of logits where the model gives logits),
    forecasts in target units for regressors."""
    outputs = model.predict(features, verbose=0)
    if head.is_classifier and head.from_logits:
        return np.asarray(ops.softmax(outputs, axis=-1))
    return outputs if head.is_classifier else outputs.reshape(-1)


def evaluate(model: keras.Model, test: Split, head: Head, loss: LossSpec) -> Evaluation:
    return evaluation_of(predict(model, test.features, head), test.targets, head, loss)


def evaluation_of(
    outputs: np.ndarray, targets: np.ndarray, head: Head, loss: LossSpec
) -> Evaluation:
    """Test metrics of what a model answered: class probabilities of a classifier, forecasts in
    target units of a regressor. One computation for a Keras model in memory and for a published
    SavedModel's `serving_default`, so that the two compare fairly."""
    if not head.is_classifier:
        outputs = outputs.reshape(-1)
        cost = make_loss(loss)(targets.reshape(-1, 1), outputs.reshape(-1, 1))
        return Evaluation(
            loss=float(cost), mae=float(np.mean(np.abs(outputs - targets.reshape(-1))))
        )
    loss_value = keras.losses.sparse_categorical_crossentropy(targets, outputs)
    accuracy = np.mean(np.argmax(outputs, axis=-1) == targets)
    return Evaluation(loss=float(np.mean(loss_value)), accuracy=float(accuracy))
