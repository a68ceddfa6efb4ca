"""Compile and fit, evaluate, and the gate a new version must pass."""

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from pipeline.preprocess import Split, Splits, to_tf_dataset
from pipeline.spec import GateSpec, OptimizerSpec, TrainingSpec


class GateFailed(RuntimeError):
    """The trained model is worse than the spec's gate allows; nothing is published."""


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float

    def to_json(self) -> dict[str, float]:
        return {"test_loss": self.loss, "test_accuracy": self.accuracy}


def make_optimizer(spec: OptimizerSpec) -> keras.optimizers.Optimizer:
    optimizers = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}
    return optimizers[spec.name](learning_rate=spec.learning_rate)


def fit(
    model: keras.Model,
    splits: Splits,
    optimizer: OptimizerSpec,
    training: TrainingSpec,
    run_dir: Path,
) -> keras.callbacks.History:
    model.compile(
        optimizer=make_optimizer(optimizer),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model.fit(
        to_tf_dataset(splits.train, training.batch_size, shuffle_seed=training.seed),
        validation_data=to_tf_dataset(splits.validation, training.batch_size),
        epochs=training.epochs,
        shuffle=False,  # the tf.data pipeline shuffles, with the spec's seed
        callbacks=[keras.callbacks.CSVLogger(str(run_dir / "history.csv"))],
        verbose=2,
    )


def evaluate(model: keras.Model, test: Split) -> Evaluation:
    probabilities = model.predict(test.features, verbose=0)
    loss = keras.losses.sparse_categorical_crossentropy(test.targets, probabilities)
    accuracy = np.mean(np.argmax(probabilities, axis=-1) == test.targets)
    return Evaluation(loss=float(np.mean(loss)), accuracy=float(accuracy))


def check_gate(evaluation: Evaluation, gate: GateSpec) -> None:
    if evaluation.accuracy < gate.min_accuracy:
        raise GateFailed(
            f"test accuracy {evaluation.accuracy:.4f} is below the gate's min_accuracy "
            f"{gate.min_accuracy}; the model was not published"
        )
