"""The model catalog: each builder takes the input description and the number of classes."""

import keras
from keras import layers

from pipeline.datasets import InputSpec
from pipeline.spec import SimpleCnnSpec


def build_model(spec: SimpleCnnSpec, input_spec: InputSpec, num_classes: int) -> keras.Model:
    builders = {"simple-cnn": simple_cnn}
    return builders[spec.architecture](spec, input_spec, num_classes)


def simple_cnn(spec: SimpleCnnSpec, input_spec: InputSpec, num_classes: int) -> keras.Model:
    low, high = input_spec.value_range
    image = keras.Input(shape=input_spec.shape, name=input_spec.name)
    # Clients send raw pixel values; scaling lives in the graph so the served model takes them too.
    x = layers.Rescaling(1.0 / (high - low), offset=-low / (high - low), name="scale_to_unit")(
        image
    )
    for index, filters in enumerate(spec.conv_filters, start=1):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{index}")(x)
    x = layers.MaxPooling2D(name="downsample")(x)
    x = layers.Dropout(spec.dropout, name="conv_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(spec.dense_units, activation="relu", name="hidden")(x)
    x = layers.Dropout(spec.dropout, name="hidden_dropout")(x)
    probabilities = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(image, probabilities, name="simple_cnn")
