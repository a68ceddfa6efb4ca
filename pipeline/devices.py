"""How training uses the machine: a distribution strategy, mixed precision and XLA, decided from
the devices TensorFlow sees and what the spec allows."""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import keras
import tensorflow as tf

from pipeline.spec import TrainingSpec


@dataclass(frozen=True)
class DevicePlan:
    gpus: int
    strategy: str  # "mirrored" across several GPUs, else "default"
    mixed_precision: bool  # float16 compute, float32 variables and outputs
    xla: bool

    def describe(self) -> str:
        where = f"{self.gpus} GPU(s)" if self.gpus else "CPU"
        return (
            f"{where}, {self.strategy} strategy, "
            f"{'mixed float16' if self.mixed_precision else 'float32'}, "
            f"XLA {'on' if self.xla else 'off'}"
        )


def plan_devices(training: TrainingSpec, gpus: int | None = None) -> DevicePlan:
    """`gpus` defaults to the GPUs TensorFlow sees; float16 pays off only on a GPU."""
    if gpus is None:
        gpus = len(tf.config.list_physical_devices("GPU"))
    return DevicePlan(
        gpus=gpus,
        strategy="mirrored" if gpus > 1 else "default",
        mixed_precision=training.mixed_precision and gpus > 0,
        xla=training.xla,
    )


@contextlib.contextmanager
def placed(plan: DevicePlan) -> Iterator[None]:
    """Build and compile the model inside this: the plan's strategy scope and dtype policy."""
    strategy = (
        tf.distribute.MirroredStrategy()
        if plan.strategy == "mirrored"
        else tf.distribute.get_strategy()
    )
    previous_policy = keras.mixed_precision.global_policy()
    if plan.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope():
            yield
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
