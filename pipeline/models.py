"""The model catalog. Every model takes the dataset's raw input (scaling, id mapping, tokenizing
and augmentation are its first layers, so the served graph does them too) and ends in a head named
after the signature output: `probabilities` (or `logits`) for classifiers, `prediction` for
regressors, computed in float32 even under mixed precision."""

import contextlib
import importlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers, ops

from pipeline.datasets import Dataset
from pipeline.spec import (
    AugmentationSpec,
    ClassicCnnSpec,
    Conv1dSpec,
    CustomModelSpec,
    EmbeddingLstmSpec,
    MlpSpec,
    ModelSpec,
    RnnStackSpec,
    SimpleCnnSpec,
)
from service.version_contract import InputSpec

OUT_OF_VOCABULARY = 2  # Keras's IMDB convention: 0 pads, 1 starts, 2 stands for rare words


@contextlib.contextmanager
def repeatable_default_seeds(seed: int) -> Iterator[None]:
    """Layers built inside draw their default seeds from a generator of their own.

    Keras draws a seed for every initializer and dropout layer built without one from Python's
    global `random`, and Prefect's background threads draw from it too (its events client, for
    one) at moments no one controls: the same seeded spec then started from other weights.
    """
    seed_generator = importlib.import_module("keras.src.random.seed_generator")
    shared = seed_generator.python_random
    seed_generator.python_random = random.Random(seed)
    try:
        yield
    finally:
        seed_generator.python_random = shared


class ModelError(ValueError):
    """A model that cannot be built for the dataset, naming both."""


@dataclass(frozen=True)
class Head:
    """What the model predicts: classes (probabilities or logits) or one value in target units
    (a regressor: no classes)."""

    num_classes: int = 0
    from_logits: bool = False

    @property
    def is_classifier(self) -> bool:
        return self.num_classes > 0

    @property
    def output_name(self) -> str:
        if not self.is_classifier:
            return "prediction"
        return "logits" if self.from_logits else "probabilities"

    @classmethod
    def for_dataset(cls, dataset: Dataset, from_logits: bool = False) -> "Head":
        if dataset.task == "classification":
            return cls(num_classes=dataset.num_classes, from_logits=from_logits)
        return cls()


@keras.saving.register_keras_serializable(package="nnserve")
class OutOfVocabulary(layers.Layer):
    """Token ids the vocabulary does not hold become the out-of-vocabulary id."""

    def __init__(self, vocabulary_size: int, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size

    def call(self, ids):
        ids = ops.cast(ids, "int32")
        known = ops.logical_and(ids >= 0, ids < self.vocabulary_size)
        return ops.where(known, ids, ops.full_like(ids, OUT_OF_VOCABULARY))

    def get_config(self) -> dict:
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size}


def build_model(
    spec: ModelSpec,
    input_spec: InputSpec,
    head: Head,
    augmentation: AugmentationSpec | None = None,
    training_features: np.ndarray | None = None,
    training_targets: np.ndarray | None = None,
) -> keras.Model:
    """`training_features` and `training_targets` are the training split: a text model learns its
    vocabulary from it, a feature table model its columns' means and standard deviations, a
    series model the range of its values, a regressor the range of its targets, and only from
    it, so that validation and test examples stay as unseen by the model as a client's are."""
    raw = keras.Input(shape=input_spec.shape, dtype=input_spec.dtype, name=input_spec.name)
    x = _from_raw_units(raw, input_spec, training_features)
    if input_spec.name == "image" and augmentation is not None:
        x = _augment(x, augmentation)
    body = _BODIES[spec.architecture]
    x = body(spec, x, input_spec)
    outputs = _head(x, head, training_targets)
    return keras.Model(raw, outputs, name=spec.architecture.replace("-", "_"))


# --- first and last layers -----------------------------------------------------------------------


def _from_raw_units(raw, input_spec: InputSpec, training_features: np.ndarray | None):
    if input_spec.is_text:
        return _tokenizer(input_spec, training_features)(raw)
    if input_spec.is_token_ids:
        return OutOfVocabulary(input_spec.vocabulary_size, name="known_ids")(raw)
    if input_spec.name == "features":
        return _standardizer(training_features)(raw)
    if input_spec.name == "sequence":
        low, high = _training_range(
            training_features,
            "a series model scales its input to 0..1 of the training split's values; "
            "no training features were given",
        )
    else:
        # An image's range is its pixel format's (0..255, or 0..16 for digits), the same for
        # every split: no statistic of the data.
        low, high = input_spec.value_range
    span = (high - low) or 1.0
    return layers.Rescaling(1.0 / span, offset=-low / span, name="scale_to_unit")(raw)


def _tokenizer(
    input_spec: InputSpec, training_texts: np.ndarray | None
) -> layers.TextVectorization:
    """Lower-cases, strips punctuation and splits on whitespace; word ids by frequency in the
    training texts (0 pads, 1 stands for any other word), padded or cut to the sequence length."""
    if training_texts is None:
        raise ModelError(
            "a text model learns its vocabulary from the training split's texts; none were given"
        )
    tokenize = layers.TextVectorization(
        max_tokens=input_spec.vocabulary_size,
        output_sequence_length=input_spec.sequence_length,
        name="tokenize",
    )
    tokenize.adapt(training_texts)
    return tokenize


def _standardizer(training_rows: np.ndarray | None) -> layers.Normalization:
    """Each column to zero mean and unit variance over the training rows. A column constant
    there is only centred: dividing by its zero spread would blow up every other value."""
    if training_rows is None:
        raise ModelError(
            "a feature table model standardizes with the training split's column statistics; "
            "no training features were given"
        )
    mean = training_rows.mean(axis=0, dtype=np.float64)
    variance = training_rows.var(axis=0, dtype=np.float64)
    variance[variance == 0] = 1.0
    return layers.Normalization(mean=mean.tolist(), variance=variance.tolist(), name="standardize")


def _training_range(values: np.ndarray | None, missing: str) -> tuple[float, float]:
    if values is None:
        raise ModelError(missing)
    return float(values.min()), float(values.max())


def _augment(x, spec: AugmentationSpec):
    if spec.rotation:
        x = layers.RandomRotation(spec.rotation, fill_mode="constant", name="random_rotation")(x)
    if spec.width_shift or spec.height_shift:
        x = layers.RandomTranslation(
            spec.height_shift, spec.width_shift, fill_mode="constant", name="random_shift"
        )(x)
    if spec.flip != "none":
        x = layers.RandomFlip(spec.flip, name="random_flip")(x)
    if spec.zoom:
        x = layers.RandomZoom(spec.zoom, fill_mode="constant", name="random_zoom")(x)
    return x


def _head(x, head: Head, training_targets: np.ndarray | None):
    if head.is_classifier:
        activation = None if head.from_logits else "softmax"
        return layers.Dense(
            head.num_classes, activation=activation, dtype="float32", name=head.output_name
        )(x)
    low, high = _training_range(
        training_targets,
        "a regressor predicts in 0..1 of the training split's target range; "
        "no training targets were given",
    )
    # The network works in 0..1 of the training targets' range; the head gives target units.
    unit = layers.Dense(1, dtype="float32", name="unit_prediction")(x)
    return layers.Rescaling(high - low, offset=low, dtype="float32", name="prediction")(unit)


# --- shared building blocks ----------------------------------------------------------------------


def _regularizer(spec: ModelSpec) -> keras.regularizers.Regularizer | None:
    if spec.l1 or spec.l2:
        return keras.regularizers.L1L2(l1=spec.l1, l2=spec.l2)
    return None


def _scaled(count: int, spec: ModelSpec) -> int:
    return max(1, round(count * getattr(spec, "width", 1.0)))


def _normalized(layer: layers.Layer, x, spec: ModelSpec):
    """A weight layer, batch-normalized when the spec asks (its bias would be redundant then)."""
    x = layer(x)
    return layers.BatchNormalization(name=f"{layer.name}_bn")(x) if spec.batch_norm else x


def _dense(x, units: int, spec: ModelSpec, name: str, activation: str = "relu"):
    dense = layers.Dense(
        units, use_bias=not spec.batch_norm, kernel_regularizer=_regularizer(spec), name=name
    )
    x = _normalized(dense, x, spec)
    x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    if spec.dropout:
        x = layers.Dropout(spec.dropout, name=f"{name}_dropout")(x)
    return x


def _conv(
    x, filters: int, size: int, spec: ModelSpec, name: str, strides=1, act=True, padding="same"
):
    conv = layers.Conv2D(
        filters,
        size,
        strides=strides,
        padding=padding,
        use_bias=not spec.batch_norm,
        kernel_regularizer=_regularizer(spec),
        name=name,
    )
    x = _normalized(conv, x, spec)
    return layers.ReLU(name=f"{name}_relu")(x) if act else x


def _needs_image(spec: ModelSpec, input_spec: InputSpec) -> None:
    if input_spec.name != "image":
        raise ModelError(
            f"model.architecture {spec.architecture} needs image input; "
            f"the dataset gives {input_spec.name} of shape {input_spec.shape}"
        )


def _at_least(x, size: int):
    """Images smaller than the architecture was designed for are enlarged inside the graph."""
    height, width = x.shape[1], x.shape[2]
    if height >= size and width >= size:
        return x
    return layers.Resizing(max(height, size), max(width, size), name="enlarge")(x)


def _as_sequence(x, spec: ModelSpec, input_spec: InputSpec, embedding_dim: int):
    """(batch, steps, features) for recurrent and 1-D convolutional layers."""
    if input_spec.is_tokenized:
        return layers.Embedding(
            input_spec.vocabulary_size, embedding_dim, mask_zero=False, name="embedding"
        )(x)
    if input_spec.name == "image":
        height, width, channels = input_spec.shape
        # Each image row is one time step.
        return layers.Reshape((height, width * channels), name="rows_as_steps")(x)
    if input_spec.name == "sequence":
        return x
    raise ModelError(
        f"model.architecture {spec.architecture} needs a sequence or an image; "
        f"the dataset gives {input_spec.name} of shape {input_spec.shape}"
    )


# --- the catalog ---------------------------------------------------------------------------------


def _mlp(spec: MlpSpec, x, input_spec: InputSpec):
    if len(x.shape) > 2:
        x = layers.Flatten(name="flatten")(x)
    for index, units in enumerate(spec.units, start=1):
        x = _dense(x, units, spec, f"dense{index}", spec.activation)
    return x


def _simple_cnn(spec: SimpleCnnSpec, x, input_spec: InputSpec):
    _needs_image(spec, input_spec)
    for index, filters in enumerate(spec.conv_filters, start=1):
        x = _conv(x, filters, 3, spec, f"conv{index}")
    x = layers.MaxPooling2D(name="downsample")(x)
    x = layers.Dropout(spec.dropout, name="conv_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    return _dense(x, spec.dense_units, spec, "hidden")


def _lenet5(spec: ClassicCnnSpec, x, input_spec: InputSpec):
    _needs_image(spec, input_spec)
    x = _at_least(x, 32)
    x = _conv(x, _scaled(6, spec), 5, spec, "conv1", padding="valid")
    x = layers.AveragePooling2D(2, name="pool1")(x)
    x = _conv(x, _scaled(16, spec), 5, spec, "conv2", padding="valid")
    x = layers.AveragePooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = _dense(x, _scaled(120, spec), spec, "dense1")
    return _dense(x, _scaled(84, spec), spec, "dense2")


def _alexnet8(spec: ClassicCnnSpec, x, input_spec: InputSpec):
    """AlexNet's five convolutions and three dense layers, sized for small images."""
    _needs_image(spec, input_spec)
    x = _at_least(x, 32)
    x = _conv(x, _scaled(96, spec), 3, spec, "conv1")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    x = _conv(x, _scaled(256, spec), 3, spec, "conv2")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool2")(x)
    x = _conv(x, _scaled(384, spec), 3, spec, "conv3")
    x = _conv(x, _scaled(384, spec), 3, spec, "conv4")
    x = _conv(x, _scaled(256, spec), 3, spec, "conv5")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool3")(x)
    x = layers.Flatten(name="flatten")(x)
    x = _dense(x, _scaled(2048, spec), spec, "dense1")
    return _dense(x, _scaled(2048, spec), spec, "dense2")


VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def _vgg16(spec: ClassicCnnSpec, x, input_spec: InputSpec):
    _needs_image(spec, input_spec)
    x = _at_least(x, 32)
    for block, (filters, convolutions) in enumerate(VGG16_BLOCKS, start=1):
        for index in range(1, convolutions + 1):
            x = _conv(x, _scaled(filters, spec), 3, spec, f"block{block}_conv{index}")
        x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = _dense(x, _scaled(512, spec), spec, "dense1")
    return _dense(x, _scaled(512, spec), spec, "dense2")


def _inception_module(x, filters: int, spec: ModelSpec, name: str, strides: int):
    one = _conv(x, filters, 1, spec, f"{name}_1x1", strides)
    three = _conv(x, filters, 1, spec, f"{name}_3x3_reduce", strides)
    three = _conv(three, filters, 3, spec, f"{name}_3x3")
    five = _conv(x, filters, 1, spec, f"{name}_5x5_reduce", strides)
    five = _conv(five, filters, 5, spec, f"{name}_5x5")
    pool = layers.MaxPooling2D(3, strides=strides, padding="same", name=f"{name}_pool")(x)
    pool = _conv(pool, filters, 1, spec, f"{name}_pool_proj")
    return layers.Concatenate(name=f"{name}_concat")([one, three, five, pool])


def _inception10(spec: ClassicCnnSpec, x, input_spec: InputSpec):
    """A stem, two blocks of two inception modules (the first halving the size), a head."""
    _needs_image(spec, input_spec)
    x = _at_least(x, 32)
    filters = _scaled(16, spec)
    x = _conv(x, filters, 3, spec, "stem")
    for block in (1, 2):
        x = _inception_module(x, filters, spec, f"block{block}_a", strides=2)
        x = _inception_module(x, filters, spec, f"block{block}_b", strides=1)
        filters *= 2
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    return layers.Dropout(spec.dropout, name="pool_dropout")(x) if spec.dropout else x


def _residual_block(x, filters: int, spec: ModelSpec, name: str, strides: int):
    shortcut = x
    x = _conv(x, filters, 3, spec, f"{name}_conv1", strides)
    x = _conv(x, filters, 3, spec, f"{name}_conv2", act=False)
    if strides != 1 or shortcut.shape[-1] != filters:
        shortcut = _conv(shortcut, filters, 1, spec, f"{name}_projection", strides, act=False)
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.ReLU(name=f"{name}_relu")(x)


def _resnet18(spec: ClassicCnnSpec, x, input_spec: InputSpec):
    """ResNet-18 for small images: a 3x3 stem, four stages of two basic blocks, a head."""
    _needs_image(spec, input_spec)
    x = _at_least(x, 32)
    x = _conv(x, _scaled(64, spec), 3, spec, "stem")
    for stage, filters in enumerate((64, 128, 256, 512), start=1):
        for block in (1, 2):
            strides = 2 if stage > 1 and block == 1 else 1
            x = _residual_block(x, _scaled(filters, spec), spec, f"stage{stage}_{block}", strides)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    return layers.Dropout(spec.dropout, name="pool_dropout")(x) if spec.dropout else x


RECURRENT_CELLS = {"simple": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}


def _recurrent_stack(x, cell: str, units: list[int], spec: ModelSpec, bidirectional=False):
    for index, count in enumerate(units, start=1):
        last = index == len(units)
        recurrent = RECURRENT_CELLS[cell](
            count,
            return_sequences=not last,
            dropout=spec.dropout,
            kernel_regularizer=_regularizer(spec),
            name=f"{cell}{index}",
        )
        if bidirectional:
            recurrent = layers.Bidirectional(recurrent, name=f"bidirectional_{cell}{index}")
        x = recurrent(x)
        if spec.batch_norm:
            x = layers.BatchNormalization(name=f"{cell}{index}_bn")(x)
    return x


def _rnn_stack(spec: RnnStackSpec, x, input_spec: InputSpec):
    x = _as_sequence(x, spec, input_spec, embedding_dim=32)
    return _recurrent_stack(x, spec.cell, spec.units, spec, spec.bidirectional)


def _embedding_lstm(spec: EmbeddingLstmSpec, x, input_spec: InputSpec):
    if not input_spec.is_tokenized:
        raise ModelError(
            "model.architecture embedding-lstm needs text or token ids (a dataset such as "
            f"csv-text or imdb); the dataset gives {input_spec.name} of dtype {input_spec.dtype}"
        )
    x = _as_sequence(x, spec, input_spec, spec.embedding_dim)
    return _recurrent_stack(x, "lstm", spec.units, spec)


def _conv1d(spec: Conv1dSpec, x, input_spec: InputSpec):
    x = _as_sequence(x, spec, input_spec, spec.embedding_dim)
    for index, filters in enumerate(spec.filters, start=1):
        x = layers.Conv1D(
            filters,
            spec.kernel_size,
            padding="same",
            activation="relu",
            kernel_regularizer=_regularizer(spec),
            name=f"conv{index}",
        )(x)
        if x.shape[1] >= 4:
            x = layers.MaxPooling1D(name=f"pool{index}")(x)
    x = layers.GlobalMaxPooling1D(name="global_pool")(x)
    return _dense(x, spec.dense_units, spec, "hidden")


def _custom(spec: CustomModelSpec, x, input_spec: InputSpec):
    """The user's function gets the scaled input's shape and returns a model ending in features
    (the head that names the outputs is added here)."""
    function = load_function(spec.function)
    user_model = function(tuple(x.shape[1:]))
    if not isinstance(user_model, keras.Model):
        raise ModelError(
            f"model.function {spec.function} returned {type(user_model).__name__}, "
            "expected a keras.Model"
        )
    return user_model(x)


def load_function(reference: str) -> Callable:
    module_name, _, attribute = reference.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ModelError(f"model.function {reference}: cannot import it ({error})") from error


_BODIES = {
    "mlp": _mlp,
    "simple-cnn": _simple_cnn,
    "lenet5": _lenet5,
    "alexnet8": _alexnet8,
    "vgg16": _vgg16,
    "inception10": _inception10,
    "resnet18": _resnet18,
    "rnn-stack": _rnn_stack,
    "embedding-lstm": _embedding_lstm,
    "conv1d": _conv1d,
    "custom": _custom,
}
