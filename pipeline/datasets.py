"""Datasets as numpy arrays in raw units, with the description of the input a model serves."""

import hashlib
from dataclasses import dataclass

import numpy as np

from pipeline.spec import DatasetSpec


@dataclass(frozen=True)
class InputSpec:
    """What a client sends: the signature input's name, per-example shape, dtype and value range."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    value_range: tuple[float, float]

    def to_json(self) -> dict:
        description = {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "value_range": list(self.value_range),
        }
        if self.name == "image":
            height, width, channels = self.shape
            description["image_size"] = [height, width]
            description["channels"] = channels
        return description


@dataclass(frozen=True)
class Dataset:
    features: np.ndarray
    targets: np.ndarray
    labels: list[str]
    input_spec: InputSpec

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for array in (self.features, self.targets):
            digest.update(str((array.dtype, array.shape)).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


def load_dataset(spec: DatasetSpec) -> Dataset:
    loaders = {"digits": _digits}
    return loaders[spec.name]()


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # The images hold counts 0..16 per pixel; they stay in those units: scaling is in the graph.
    images = digits.images.astype(np.float32)[..., np.newaxis]
    return Dataset(
        features=images,
        targets=digits.target.astype(np.int64),
        labels=[str(name) for name in digits.target_names],
        input_spec=InputSpec(
            name="image", shape=images.shape[1:], dtype="float32", value_range=(0.0, 16.0)
        ),
    )
