"""SavedModels the tests build themselves, so they run where ../shared/tfserving-testdata is not.

`write_half_plus_two` is the TF2 equivalent of TF Serving's half_plus_two test model: the same
signature names, inputs and outputs (y = 0.5 * x + 2; regress_x_to_y2 and regress_x2_to_y3 add 3).
"""

from pathlib import Path


def write_half_plus_two(
    base_path: Path, version_dir: str = "00000123", offset: float = 2.0
) -> Path:
    import tensorflow as tf

    def parse_x(serialized):
        spec = {"x": tf.io.FixedLenFeature([1], tf.float32)}
        return tf.io.parse_example(serialized, spec)["x"]

    examples = tf.TensorSpec([None], tf.string, name="inputs")

    class HalfPlusTwo(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def predict(self, x):
            return {"y": 0.5 * x + offset}

        @tf.function(input_signature=[examples])
        def classify_x_to_y(self, inputs):
            return {"scores": 0.5 * parse_x(inputs) + offset}

        @tf.function(input_signature=[examples])
        def regress_x_to_y(self, inputs):
            return {"outputs": 0.5 * parse_x(inputs) + offset}

        @tf.function(input_signature=[examples])
        def regress_x_to_y2(self, inputs):
            return {"outputs": 0.5 * parse_x(inputs) + offset + 1.0}

        # As in TF Serving's model: a regress signature that takes a float tensor, not examples.
        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="inputs")])
        def regress_x2_to_y3(self, inputs):
            return {"outputs": 0.5 * inputs + offset + 1.0}

    module = HalfPlusTwo()
    signatures = {
        "serving_default": module.predict,
        "classify_x_to_y": module.classify_x_to_y,
        "regress_x_to_y": module.regress_x_to_y,
        "regress_x_to_y2": module.regress_x_to_y2,
        "regress_x2_to_y3": module.regress_x2_to_y3,
    }
    tf.saved_model.save(module, str(base_path / version_dir), signatures=signatures)
    return base_path


# Every dtype a signature input can have that a client can send in a TensorProto.
IDENTITY_DTYPES = (
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
    "complex64",
    "complex128",
    "string",
)


def write_identity(base_path: Path, version_dir: str = "1") -> Path:
    """One signature per dtype, `identity_<dtype>`: input `x` of any shape, output `y` = x."""
    import tensorflow as tf

    module = tf.Module()
    signatures = {}
    for name in IDENTITY_DTYPES:
        spec = tf.TensorSpec(None, tf.as_dtype(name), name="x")
        signatures[f"identity_{name}"] = tf.function(
            lambda x: {"y": tf.identity(x)}, input_signature=[spec]
        )
    tf.saved_model.save(module, str(base_path / version_dir), signatures=signatures)
    return base_path


# One builder per kind of SavedModel a user may hand to TF Serving. Each writes the version folder
# `base_path / version_dir` and returns `base_path`. The models built by hand use multiples of
# powers of two, on which float32 arithmetic is exact, so their answers can be worked out by hand.

TF1_WEIGHTS = ((1.0, -1.0), (0.5, 2.0))  # y = x @ W + b: x has 2 features, y 2 values
TF1_BIAS = (0.25, -0.5)
TF1_CLASSES = (b"neg", b"pos")


def write_tf1_builder(base_path: Path, version_dir: str = "1") -> Path:
    """A TF1 SavedModel as tf.compat.v1's SavedModelBuilder writes it from a graph-mode session:
    variables W and b; `serving_default` (predict: x [-1, 2] -> y = x @ W + b) and `classify`
    (tf.Example with float feature `x` of 2 values -> scores = x @ W + b, classes neg/pos)."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as session:
        weights = v1.get_variable("weights", initializer=tf.constant(TF1_WEIGHTS))
        bias = v1.get_variable("bias", initializer=tf.constant(TF1_BIAS))
        x = v1.placeholder(tf.float32, [None, 2], name="x")
        y = tf.matmul(x, weights) + bias
        examples = v1.placeholder(tf.string, [None], name="examples")
        features = v1.parse_example(examples, {"x": v1.FixedLenFeature([2], tf.float32)})
        scores = tf.matmul(features["x"], weights) + bias
        classes = tf.tile([TF1_CLASSES], [tf.shape(examples)[0], 1])
        session.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(str(base_path / version_dir))
        builder.add_meta_graph_and_variables(
            session,
            [v1.saved_model.tag_constants.SERVING],
            signature_def_map={
                "serving_default": v1.saved_model.predict_signature_def({"x": x}, {"y": y}),
                "classify": v1.saved_model.classification_signature_def(examples, classes, scores),
            },
        )
        builder.save()
    return base_path


TF2_WEIGHTS = (1.5, -2.0, 0.25)
TF2_BIAS = 1.0


def write_tf2_module(base_path: Path, version_dir: str = "1") -> Path:
    """A tf.Module with tf.Variables and a tf.function signature, saved as TensorFlow's SavedModel
    guide shows: `serving_default` takes x [-1, 3] -> y = sum(x * w, axis 1) + b, shape [-1]."""
    import tensorflow as tf

    class Weighted(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(TF2_WEIGHTS)
            self.b = tf.Variable(TF2_BIAS)

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.reduce_sum(x * self.w, axis=1) + self.b}

    module = Weighted()
    tf.saved_model.save(module, str(base_path / version_dir), signatures=module.serve)
    return base_path


KERAS_FEATURES = 4


def small_keras_model(seed: int = 7):
    """Dense -> BatchNormalization -> Dense, 4 features in, 3 scores out, with every weight (the
    normalization's moving statistics too) drawn from `seed`, so no variable is at its initial
    value and a model that serves initial values answers differently."""
    import keras
    import numpy as np

    model = keras.Sequential(
        [
            keras.Input((KERAS_FEATURES,), name="features"),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(3),
        ]
    )
    rng = np.random.default_rng(seed)
    # Variances must be positive; every other weight may take any value.
    model.set_weights(
        [
            np.abs(rng.normal(size=w.shape)).astype(w.dtype) + 0.5
            if "variance" in v.path
            else rng.normal(size=w.shape).astype(w.dtype)
            for v, w in zip(model.weights, model.get_weights(), strict=True)
        ]
    )
    return model


def _keras_input_spec():
    import tensorflow as tf

    return tf.TensorSpec([None, KERAS_FEATURES], tf.float32, name="features")


def write_keras_in_module(
    model, base_path: Path, version_dir: str = "1", track_tf_variables: bool = False
) -> Path:
    """A Keras model held by a tf.Module whose tf.function is the signature (`serving_default`:
    features -> scores), saved with tf.saved_model.save.

    With Keras 3 this SavedModel's MetaGraph restores its checkpoint into copies of the model's
    variables that the signature never reads, so TensorFlow's C++ loader (TF Serving's) loads it
    and then fails every call. `track_tf_variables` also tracks the tf.Variables under the Keras
    variables on the module, which puts them in the MetaGraph's restore op too."""
    import tensorflow as tf

    class Holder(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            if track_tf_variables:
                self.tf_variables = [variable.value for variable in model.variables]

        @tf.function(input_signature=[_keras_input_spec()])
        def serve(self, features):
            return {"scores": self.model(features, training=False)}

    module = Holder()
    tf.saved_model.save(module, str(base_path / version_dir), signatures=module.serve)
    return base_path


def write_keras_export(model, base_path: Path, version_dir: str = "1") -> Path:
    """Keras's own `model.export()`: signatures `serve` and `serving_default`, input `features`,
    output `output_0`."""
    model.export(str(base_path / version_dir), format="tf_saved_model", verbose=False)
    return base_path


def write_keras_export_archive(model, base_path: Path, version_dir: str = "1") -> Path:
    """keras.export.ExportArchive with three endpoints: `serving_default` (features -> scores),
    `top_class` (features -> class_id int64 and its score) and `scaled` (features and a scale
    [-1, 1] -> scores * scale)."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        lambda features: {"scores": model(features, training=False)},
        input_signature=[_keras_input_spec()],
    )

    def top_class(features):
        scores = model(features, training=False)
        return {
            "class_id": tf.argmax(scores, axis=-1, output_type=tf.int64),
            "score": tf.reduce_max(scores, axis=-1),
        }

    archive.add_endpoint("top_class", top_class, input_signature=[_keras_input_spec()])
    archive.add_endpoint(
        "scaled",
        lambda features, scale: {"scores": model(features, training=False) * scale},
        input_signature=[_keras_input_spec(), tf.TensorSpec([None, 1], tf.float32, name="scale")],
    )
    archive.write_out(str(base_path / version_dir), verbose=False)
    return base_path


def write_several_signatures(base_path: Path, version_dir: str = "1") -> Path:
    """One tf.Module, three signatures of different inputs, outputs and dtypes:
    `serving_default` (x float [-1] -> doubled = 2x + offset, offset a variable of 0.5),
    `sum_and_product` (a, b int64 [-1] -> sum, product) and `count_positive` (values float
    [-1, -1] -> count int32 [-1], the number of positive values in each row)."""
    import tensorflow as tf

    class Several(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.offset = tf.Variable(0.5)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def doubled(self, x):
            return {"doubled": 2.0 * x + self.offset}

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.int64, name="a"),
                tf.TensorSpec([None], tf.int64, name="b"),
            ]
        )
        def sum_and_product(self, a, b):
            return {"sum": a + b, "product": a * b}

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="values")])
        def count_positive(self, values):
            return {"count": tf.reduce_sum(tf.cast(values > 0, tf.int32), axis=1)}

    module = Several()
    signatures = {
        "serving_default": module.doubled,
        "sum_and_product": module.sum_and_product,
        "count_positive": module.count_positive,
    }
    tf.saved_model.save(module, str(base_path / version_dir), signatures=signatures)
    return base_path


def write_text_stats(base_path: Path, version_dir: str = "1") -> Path:
    """Strings in, numbers out: `serving_default` takes text string [-1] and answers `words`
    (int64: whitespace-separated words, as Python's str.split counts them) and `utf8_bytes`
    (int32: the text's length in UTF-8 bytes)."""
    import tensorflow as tf

    class TextStats(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text):
            return {
                "words": tf.strings.split(text).row_lengths(),
                "utf8_bytes": tf.strings.length(text),
            }

    module = TextStats()
    tf.saved_model.save(module, str(base_path / version_dir), signatures=module.serve)
    return base_path


VOCABULARY = ("the", "cat", "sat", "on", "mat")


def write_asset_lookup(base_path: Path, version_dir: str = "1") -> Path:
    """A StaticHashTable initialized from a vocabulary file (a SavedModel asset): `serving_default`
    takes words string [-1] and answers ids int64 (the word's line in the file, -1 if absent).

    As a repository publishes versions, the SavedModel is written under another name, then renamed
    into place, and the file it was built from is deleted: only `<version>/assets/vocabulary.txt`
    is left, so a loader must find assets relative to the version folder."""
    import shutil
    import tempfile

    import tensorflow as tf

    scratch = Path(tempfile.mkdtemp(prefix="vocabulary-"))
    try:
        vocabulary = scratch / "vocabulary.txt"
        vocabulary.write_text("".join(f"{word}\n" for word in VOCABULARY))

        class Lookup(tf.Module):
            def __init__(self) -> None:
                super().__init__()
                initializer = tf.lookup.TextFileInitializer(
                    str(vocabulary),
                    key_dtype=tf.string,
                    key_index=tf.lookup.TextFileIndex.WHOLE_LINE,
                    value_dtype=tf.int64,
                    value_index=tf.lookup.TextFileIndex.LINE_NUMBER,
                )
                self.table = tf.lookup.StaticHashTable(initializer, default_value=-1)

            @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="words")])
            def serve(self, words):
                return {"ids": self.table.lookup(words)}

        module = Lookup()
        saved_as = base_path / f"{version_dir}.saving"  # not a version: no server loads it
        tf.saved_model.save(module, str(saved_as), signatures=module.serve)
    finally:
        shutil.rmtree(scratch)
    saved_as.rename(base_path / version_dir)
    return base_path
