"""The stable version a retraining run measures its candidate against: the version the model
config labels `stable`, whether its data and spec are the run's own, and its answers on the
candidate's test split, through its SavedModel's `serving_default` as a client would get them."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from pipeline.models import Head
from pipeline.spec import Spec, training_digest
from service import model_repository, serving_config
from service.model_repository import METADATA_PATH

# Examples fed to the SavedModel at once: bounds memory on large test splits.
BATCH_SIZE = 256


class StableVersionError(RuntimeError):
    """The stable version cannot be read or evaluated; the message says which and why."""


@dataclass(frozen=True)
class StableVersion:
    model_name: str
    version: int
    version_dir: Path
    metadata: dict  # its nnserve.json; empty when it has none


def find(config: serving_config.Config, model: str, base_path: Path) -> StableVersion | None:
    """The version of `model` the config labels stable, or None when none is."""
    version = serving_config.labels(config, model).get(serving_config.STABLE)
    if version is None:
        return None
    version_dir = base_path / str(version)
    if not model_repository.is_complete(version_dir):
        raise StableVersionError(
            f"the model config labels version {version} of {model} stable, but {version_dir} "
            "holds no SavedModel"
        )
    try:
        metadata = model_repository.read_metadata(version_dir) or {}
    except (OSError, ValueError) as error:
        raise StableVersionError(
            f"cannot read {METADATA_PATH} of version {version} of {model}: {error}"
        ) from None
    return StableVersion(model, version, version_dir, metadata)


def unchanged_since(stable: StableVersion, dataset_fingerprint: str, spec: Spec) -> bool:
    """Whether `stable` was trained on this very data with what `spec` trains (its gate,
    schedule and data checks aside): retraining would then make the same model again."""
    if stable.metadata.get("dataset_fingerprint") != dataset_fingerprint:
        return False
    try:
        # Validated again, so that keys added to specs since, with their defaults, compare equal.
        trained = Spec.model_validate(stable.metadata.get("spec") or {})
    except ValidationError:
        return False
    return training_digest(trained) == training_digest(spec)


def answers(stable: StableVersion, features: np.ndarray, head: Head) -> np.ndarray:
    """What `serving_default` of the stable version answers for raw `features`: class
    probabilities of a classifier, forecasts of a regressor."""
    import tensorflow as tf

    output = "probabilities" if head.is_classifier else "prediction"
    loaded = tf.saved_model.load(str(stable.version_dir))
    serve = loaded.signatures.get("serving_default")
    inputs = serve.structured_input_signature[1] if serve is not None else {}
    if len(inputs) != 1 or output not in serve.structured_outputs:
        raise StableVersionError(
            f"version {stable.version} of {stable.model_name} has no serving_default signature "
            f"taking one input and answering {output!r}: it cannot be compared with the candidate"
        )
    ((name, tensor_spec),) = inputs.items()
    answered = []
    try:
        for start in range(0, len(features), BATCH_SIZE):
            batch = features[start : start + BATCH_SIZE]
            if tensor_spec.dtype == tf.string:
                tensor = tf.constant([str(text) for text in batch])
            else:
                tensor = tf.constant(np.asarray(batch, dtype=tensor_spec.dtype.as_numpy_dtype))
            answered.append(serve(**{name: tensor})[output].numpy())
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
        raise StableVersionError(
            f"version {stable.version} of {stable.model_name} cannot take the candidate's test "
            f"examples as its input {name!r} ({tensor_spec}): {error}"
        ) from None
    return np.concatenate(answered)
