"""Training specs: one YAML file per model, validated on load; an unknown key is an error."""

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class SpecError(ValueError):
    """A spec file that cannot be used, with the file and the offending key in the message."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(_Strict):
    name: Literal["digits"]
    test_fraction: float = Field(0.2, gt=0, lt=1)
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    seed: int = 42


class SimpleCnnSpec(_Strict):
    architecture: Literal["simple-cnn"]
    conv_filters: list[int] = Field(default_factory=lambda: [32, 64], min_length=1)
    dense_units: int = Field(128, gt=0)
    dropout: float = Field(0.25, ge=0, lt=1)


class OptimizerSpec(_Strict):
    name: Literal["adam", "sgd"] = "adam"
    learning_rate: float = Field(1e-3, gt=0)


class TrainingSpec(_Strict):
    epochs: int = Field(gt=0)
    batch_size: int = Field(32, gt=0)
    seed: int = 42


class GateSpec(_Strict):
    """The evaluation a new version must pass before it is published."""

    min_accuracy: float = Field(0.0, ge=0, le=1)


class Spec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    dataset: DatasetSpec
    model: SimpleCnnSpec
    optimizer: OptimizerSpec = OptimizerSpec()
    training: TrainingSpec
    gate: GateSpec = GateSpec()


def load_spec(path: str | Path) -> Spec:
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as error:
        raise SpecError(f"{path}: cannot read spec file: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(document, dict):
        raise SpecError(f"{path}: expected a mapping of spec keys, got {type(document).__name__}")
    try:
        return Spec.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc'])}: {_describe(issue)}"
            for issue in error.errors()
        )
        raise SpecError(f"{path}: {problems}") from error


def _describe(issue: dict) -> str:
    if issue["type"] == "extra_forbidden":
        return "unknown key"
    return issue["msg"]
