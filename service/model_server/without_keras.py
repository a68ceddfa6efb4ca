"""The serving process runs SavedModels without Keras, as TensorFlow Serving does.

`import tensorflow` imports Keras when it is installed (TensorFlow's package initialiser loads
`keras.src.optimizers` eagerly), and Keras imports scikit-learn, pandas and matplotlib.
A process that only runs SavedModel signatures needs none of it: the C++ TF Serving has no Keras,
so every SavedModel it serves loads without. Hiding Keras from the serving process saves about
130 MB of resident memory and a third of its import time (docs/benchmarks.md, "Peers").

TensorFlow is written to run where Keras is absent: it looks the package up with
`importlib.util.find_spec` and treats an ImportError from the eager load as "not installed". So
the package is hidden by a finder that answers for it with a spec that has no origin and a loader
that refuses, which is exactly what those two places see when Keras is not installed.
"""

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

HIDDEN_PACKAGES = frozenset({"keras", "tf_keras"})


class _Refuse(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        raise ModuleNotFoundError(
            f"{spec.name} is not available in the serving process (SavedModels run without it)",
            name=spec.name,
        )

    def exec_module(self, module: ModuleType) -> None:  # never reached: create_module raises
        raise NotImplementedError


class _HideKeras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        if name.partition(".")[0] in HIDDEN_PACKAGES:
            return importlib.machinery.ModuleSpec(name, _Refuse())
        return None


def hide_keras() -> None:
    """Make Keras unimportable in this process; call before TensorFlow is imported."""
    if "tensorflow" in sys.modules:
        raise RuntimeError("hide_keras() must run before TensorFlow is imported")
    if not any(isinstance(finder, _HideKeras) for finder in sys.meta_path):
        sys.meta_path.insert(0, _HideKeras())
