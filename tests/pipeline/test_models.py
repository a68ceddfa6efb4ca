"""The model catalog: every architecture builds for its kind of input and names its outputs as
the signature does; losses, optimizers and the multiply-add counts of the reports."""

import random

import keras
import numpy as np
import pytest
from pydantic import TypeAdapter
from support import DIGITS_SPEC

from pipeline import reports, training
from pipeline.datasets import load_dataset
from pipeline.flow import model_for
from pipeline.models import Head, ModelError, build_model
from pipeline.preprocess import split_dataset
from pipeline.spec import AugmentationSpec, LossSpec, ModelSpec, OptimizerSpec, load_spec
from service.version_contract import InputSpec

IMAGE = InputSpec("image", (8, 8, 1), "float32", (0.0, 16.0))
COLOUR = InputSpec("image", (32, 32, 3), "uint8", (0.0, 255.0))
SERIES = InputSpec("sequence", (12, 1), "float32", (0.0, 200.0))
TOKENS = InputSpec("sequence", (20,), "int32", (0.0, 500.0), vocabulary_size=100)
TABLE = InputSpec("features", (4,), "float32", (0.0, 8.0))
# The training rows a table model standardizes with: column means 1, 2, 3, 4 and deviations
# 1, 2, 1, 2.
TABLE_ROWS = np.array([[0, 0, 2, 2], [2, 4, 4, 6]], "float32")
# The training windows a series model scales by, and the training targets a regressor's output
# range comes from.
SERIES_WINDOWS = np.linspace(0.0, 200.0, 24, dtype="float32").reshape(2, 12, 1)
FORECAST_TARGETS = np.array([10.0, 190.0], "float32")
CLASSES = Head(num_classes=3)
FORECAST = Head()

CATALOG = [
    ({"architecture": "mlp", "units": [8, 4]}, TABLE, CLASSES),
    ({"architecture": "mlp", "units": [8]}, TABLE, FORECAST),
    ({"architecture": "simple-cnn", "conv_filters": [4], "dense_units": 8}, IMAGE, CLASSES),
    ({"architecture": "lenet5", "width": 0.5}, IMAGE, CLASSES),
    ({"architecture": "alexnet8", "width": 0.05}, COLOUR, CLASSES),
    ({"architecture": "vgg16", "width": 0.0625, "batch_norm": True}, COLOUR, CLASSES),
    ({"architecture": "inception10", "width": 0.25}, IMAGE, CLASSES),
    ({"architecture": "resnet18", "width": 0.0625, "batch_norm": True}, IMAGE, CLASSES),
    ({"architecture": "rnn-stack", "cell": "lstm", "units": [8, 8]}, IMAGE, CLASSES),
    ({"architecture": "rnn-stack", "cell": "gru", "units": [8]}, SERIES, FORECAST),
    ({"architecture": "rnn-stack", "cell": "simple", "units": [4, 4]}, SERIES, FORECAST),
    ({"architecture": "embedding-lstm", "embedding_dim": 8, "units": [8]}, TOKENS, CLASSES),
    ({"architecture": "conv1d", "filters": [4, 4]}, TOKENS, CLASSES),
    ({"architecture": "conv1d", "filters": [4]}, SERIES, FORECAST),
]


def model_spec(document: dict) -> ModelSpec:
    return TypeAdapter(ModelSpec).validate_python(document)


def training_rows(input_spec: InputSpec) -> np.ndarray | None:
    """What the flow passes as the training split's features where the model learns from them."""
    return {TABLE: TABLE_ROWS, SERIES: SERIES_WINDOWS}.get(input_spec)


def training_targets(head: Head) -> np.ndarray | None:
    return None if head.is_classifier else FORECAST_TARGETS


@pytest.mark.parametrize(
    ("document", "input_spec", "head"),
    CATALOG,
    ids=[f"{d['architecture']}-{i.name}-{h.output_name}" for d, i, h in CATALOG],
)
def test_every_catalog_model_builds_for_its_input_and_names_its_output(document, input_spec, head):
    model = build_model(
        model_spec(document),
        input_spec,
        head,
        training_features=training_rows(input_spec),
        training_targets=training_targets(head),
    )
    assert model.inputs[0].name == input_spec.name
    assert model.layers[-1].name == head.output_name
    raw = np.ones((2, *input_spec.shape), dtype=input_spec.dtype)
    outputs = model(raw, training=False)
    if head.is_classifier:
        assert outputs.shape == (2, head.num_classes)
        np.testing.assert_allclose(np.sum(outputs, axis=-1), 1.0, atol=1e-5)
    else:
        assert outputs.shape == (2, 1)


def test_a_seeded_model_starts_from_the_same_weights_whatever_else_draws_at_random():
    """The flow builds under the spec's seed alone: a draw from Python's global random between
    seeding and building (Prefect's threads make them) changes nothing."""
    spec = load_spec(DIGITS_SPEC)
    dataset = load_dataset(spec.dataset)
    splits = split_dataset(dataset, spec.dataset)

    def initial_weights(draw_in_between: bool) -> list[np.ndarray]:
        keras.utils.set_random_seed(spec.training.seed)
        if draw_in_between:
            random.random()
        return model_for(spec, dataset, splits).get_weights()

    first, second = initial_weights(False), initial_weights(True)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_recurrent_layers_hand_sequences_on_except_the_last():
    model = build_model(
        model_spec({"architecture": "rnn-stack", "cell": "lstm", "units": [8, 6, 4]}),
        SERIES,
        FORECAST,
        training_features=SERIES_WINDOWS,
        training_targets=FORECAST_TARGETS,
    )
    lstms = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
    assert [layer.return_sequences for layer in lstms] == [True, True, False]


def test_regularization_dropout_and_batch_norm_end_up_in_the_model():
    document = {"architecture": "mlp", "units": [8], "l2": 0.01, "dropout": 0.5, "batch_norm": True}
    model = build_model(model_spec(document), TABLE, CLASSES, training_features=TABLE_ROWS)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"Dropout", "BatchNormalization", "Normalization"} <= kinds
    assert len(model.losses) == 1  # the L2 penalty of the hidden layer


def test_augmentation_changes_images_in_training_only():
    augmentation = AugmentationSpec(rotation=0.2, width_shift=0.2, flip="horizontal", zoom=0.2)
    spec = model_spec({"architecture": "simple-cnn", "conv_filters": [2], "dense_units": 4})
    model = build_model(spec, IMAGE, CLASSES, augmentation)
    assert {"random_rotation", "random_shift", "random_flip", "random_zoom"} <= {
        layer.name for layer in model.layers
    }
    images = np.random.default_rng(0).uniform(0, 16, size=(4, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(model(images, training=False), model(images, training=False))


def test_raw_units_are_scaled_inside_the_model():
    spec = model_spec({"architecture": "mlp", "units": [4]})
    model = build_model(spec, TABLE, CLASSES, training_features=TABLE_ROWS)
    standardized = model.get_layer("standardize")(np.array([[1.0, 4.0, 3.0, 8.0]], "float32"))
    np.testing.assert_allclose(standardized, [[0.0, 1.0, 0.0, 2.0]], atol=1e-6)


@pytest.mark.parametrize(
    ("input_spec", "head", "features", "message"),
    [
        (TABLE, CLASSES, None, "standardizes with the training split's column statistics; no"),
        (SERIES, FORECAST, None, "scales its input to 0..1 of the training split's values; no"),
        (TABLE, FORECAST, TABLE_ROWS, "training split's target range; no training targets"),
    ],
    ids=["table-features", "series-features", "regressor-targets"],
)
def test_a_model_that_learns_from_the_training_split_needs_it(input_spec, head, features, message):
    with pytest.raises(ModelError, match=message):
        build_model(
            model_spec({"architecture": "mlp", "units": [4]}),
            input_spec,
            head,
            training_features=features,
        )


def test_token_ids_outside_the_vocabulary_become_the_out_of_vocabulary_id():
    model = build_model(
        model_spec({"architecture": "embedding-lstm", "units": [4]}), TOKENS, CLASSES
    )
    ids = model.get_layer("known_ids")(np.array([[5, 99, 100, 7000, -3]], "int32"))
    np.testing.assert_array_equal(ids, [[5, 99, 2, 2, 2]])


@pytest.mark.parametrize(
    ("document", "input_spec", "message"),
    [
        ({"architecture": "vgg16"}, TABLE, "vgg16 needs image input"),
        ({"architecture": "rnn-stack"}, TABLE, "rnn-stack needs a sequence or an image"),
        ({"architecture": "embedding-lstm"}, SERIES, "embedding-lstm needs text or token ids"),
        ({"architecture": "custom", "function": "no_such_module:build"}, TABLE, "cannot import"),
    ],
)
def test_a_model_that_cannot_take_the_input_is_an_error_naming_both(document, input_spec, message):
    with pytest.raises(ModelError, match=message):
        build_model(
            model_spec(document), input_spec, CLASSES, training_features=training_rows(input_spec)
        )


def test_a_users_own_model_gets_the_scaled_input_and_nnserves_head(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        "import keras\n"
        "def tiny(input_shape):\n"
        "    inputs = keras.Input(input_shape)\n"
        "    return keras.Model(inputs, keras.layers.Dense(5, activation='relu')(inputs))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model(
        model_spec({"architecture": "custom", "function": "my_models:tiny"}),
        TABLE,
        CLASSES,
        training_features=TABLE_ROWS,
    )
    assert model.layers[-1].name == "probabilities"
    assert model(np.ones((1, 4), "float32")).shape == (1, 3)


def test_the_asymmetric_loss_charges_each_side_its_own_price():
    loss = training.AsymmetricCost(over_price=1.0, under_price=3.0)
    truth = np.array([10.0, 10.0], "float32")
    forecasts = np.array([[12.0], [9.0]], "float32")  # 2 too high (cost 2), 1 too low (cost 3)
    assert float(loss(truth, forecasts)) == pytest.approx(2.5)


@pytest.mark.parametrize(
    ("document", "kind", "momentum"),
    [
        ({"name": "sgd"}, keras.optimizers.SGD, 0.0),
        ({"name": "sgd", "momentum": 0.9, "nesterov": True}, keras.optimizers.SGD, 0.9),
        ({"name": "adagrad"}, keras.optimizers.Adagrad, None),
        ({"name": "rmsprop", "momentum": 0.5}, keras.optimizers.RMSprop, 0.5),
        ({"name": "adam"}, keras.optimizers.Adam, None),
    ],
)
def test_optimizers(document, kind, momentum):
    optimizer = training.make_optimizer(OptimizerSpec(**document))
    assert isinstance(optimizer, kind)
    if momentum is not None:
        assert optimizer.momentum == momentum


def test_exponential_decay_with_staircase():
    spec = OptimizerSpec(
        name="sgd",
        learning_rate={
            "initial_rate": 0.1,
            "decay_rate": 0.5,
            "decay_steps": 10,
            "staircase": True,
        },
    )
    schedule = training.make_learning_rate(spec)
    assert isinstance(schedule, keras.optimizers.schedules.ExponentialDecay)
    assert [float(schedule(step)) for step in (0, 9, 10, 25)] == pytest.approx(
        [0.1, 0.1, 0.05, 0.025]
    )


def test_losses_with_and_without_logits():
    logits = np.array([[2.0, 0.0, -1.0]], "float32")
    probabilities = np.exp(logits) / np.exp(logits).sum()
    with_logits = training.make_loss(
        LossSpec(name="sparse_categorical_crossentropy", from_logits=True)
    )
    without = training.make_loss(LossSpec(name="sparse_categorical_crossentropy"))
    assert float(with_logits(np.array([0]), logits)) == pytest.approx(
        float(without(np.array([0]), probabilities)), 1e-5
    )
    one_hot = training.make_loss(LossSpec(name="categorical_crossentropy"))
    assert float(one_hot(np.array([[1.0, 0, 0]]), probabilities)) == pytest.approx(
        -np.log(probabilities[0, 0]), 1e-5
    )
    assert isinstance(training.make_loss(LossSpec(name="mse")), keras.losses.MeanSquaredError)


def test_multiply_adds_per_layer():
    inputs = keras.Input((5, 5, 1))
    conv = keras.layers.Conv2D(2, 3, padding="same", name="conv")(inputs)
    rows = keras.layers.Reshape((5, 10))(conv)
    lstm = keras.layers.LSTM(3, name="lstm")(rows)
    dense = keras.layers.Dense(4, name="dense")(lstm)
    model = keras.Model(inputs, dense)
    assert reports.multiply_adds(model.get_layer("conv")) == 5 * 5 * 3 * 3 * 1 * 2
    assert reports.multiply_adds(model.get_layer("lstm")) == 4 * (10 + 3) * 3 * 5
    assert reports.multiply_adds(model.get_layer("dense")) == 3 * 4
