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
