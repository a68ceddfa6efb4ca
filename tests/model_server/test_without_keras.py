"""The serving process runs SavedModels without Keras (service/model_server/without_keras.py)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from support import REPO_ROOT, serving_pid

from service.model_server.without_keras import hide_keras

# Keras imports these (TensorFlow itself imports SciPy); each has compiled extensions that show
# in a process's memory map.
KERAS_DEPENDENCIES = ("/sklearn/", "/pandas/", "/matplotlib/")

CALL_WITHOUT_KERAS = """
import json, sys
from service.model_server.without_keras import hide_keras
hide_keras()
import numpy as np
import tensorflow as tf

signature = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
images = np.asarray(json.loads(sys.argv[2]), dtype=np.float32)
outputs = {name: value.numpy().tolist() for name, value in signature(image=images).items()}
try:
    import keras
    refused = None
except ModuleNotFoundError as error:
    refused = str(error)
keras_brings = {"keras", "sklearn", "pandas", "matplotlib"}
loaded = sorted({m.split(".")[0] for m in sys.modules} & keras_brings)
print(json.dumps({"outputs": outputs, "refused": refused, "loaded": loaded}))
"""


def test_a_keras_export_answers_as_with_keras_when_keras_is_hidden(trained_digits):
    version_dir = trained_digits.version_dir
    images = np.random.default_rng(7).uniform(0, 16, (3, 8, 8, 1)).astype(np.float32)
    with_keras = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    expected = {name: value.numpy() for name, value in with_keras(image=images).items()}

    result = subprocess.run(
        [sys.executable, "-c", CALL_WITHOUT_KERAS, str(version_dir), json.dumps(images.tolist())],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.splitlines()[-1])
    assert answer["loaded"] == []
    assert "keras is not available in the serving process" in answer["refused"]
    assert answer["outputs"].keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_allclose(answer["outputs"][name], value, rtol=1e-5, atol=1e-6)


def test_the_serving_process_maps_nothing_keras_brings(model_server_process, trained_digits):
    base_path = trained_digits.version_dir.parent
    with model_server_process(
        f"--model_name={trained_digits.model_name}", f"--model_base_path={base_path}"
    ) as (process, _):
        maps = Path(f"/proc/{serving_pid(process)}/maps").read_text()
    assert "libtensorflow" in maps  # the map is that of the process that serves
    assert [library for library in KERAS_DEPENDENCIES if library in maps] == []


def test_hiding_keras_after_tensorflow_is_loaded_is_refused():
    assert "tensorflow" in sys.modules
    with pytest.raises(RuntimeError, match="before TensorFlow is imported"):
        hide_keras()
