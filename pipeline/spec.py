"""Training specs: one YAML file per model, validated on load; an unknown key is an error."""

import copy
import hashlib
import json
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    DirectoryPath,
    Field,
    FilePath,
    ValidationError,
    field_validator,
    model_validator,
)


class SpecError(ValueError):
    """A spec file that cannot be used, with the file and the offending key in the message."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Fraction = Annotated[float, Field(gt=0, lt=1)]
Positive = Annotated[int, Field(gt=0)]


# --- datasets ------------------------------------------------------------------------------------

CheckLevel = Literal["warn", "error", "off"]


class DatasetChecks(_Strict):
    """What each sanity check of the examples before training (pipeline/data_checks.py) does
    with what it finds: log a warning, stop training with an error, or not look. One level for
    all is written `checks: error`."""

    rare_class: CheckLevel = "warn"
    mixed_labels: CheckLevel = "warn"
    mixed_images: CheckLevel = "warn"
    split_duplicates: CheckLevel = "warn"

    @model_validator(mode="before")
    @classmethod
    def _one_level_for_all(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        if value not in get_args(CheckLevel):
            raise ValueError(
                f"expected one of {list(get_args(CheckLevel))} for every check, or a mapping "
                f"of {list(cls.model_fields)} to one of them; got {value!r}"
            )
        return dict.fromkeys(cls.model_fields, value)


class _DatasetBase(_Strict):
    test_fraction: Fraction = 0.2
    validation_fraction: Fraction = 0.1
    seed: int = 42
    # Keep only the first N examples (after a seeded shuffle): CI-sized runs of the real specs.
    max_examples: Positive | None = None
    checks: DatasetChecks = DatasetChecks()


class PackagedDataset(_DatasetBase):
    """Datasets shipped inside installed packages (scikit-learn, statsmodels)."""

    name: Literal["digits", "iris", "sunspots", "co2"]
    # Time series only: how many past steps the model sees, and how far ahead it forecasts.
    window: Positive = 12
    horizon: Positive = 1


class DownloadedDataset(_DatasetBase):
    """The canonical datasets Keras users know, fetched from their download locations."""

    name: Literal["mnist", "fashion-mnist", "cifar10", "imdb", "boston-housing"]
    # Base URL or fsspec folder holding the upstream files; default: the canonical location.
    source: str | None = None
    # Where verified downloads are kept; default: $NNSERVE_DATA_DIR (see service/settings.py).
    cache_dir: Path | None = None
    # SHA-256 by file name, replacing the catalog's: for a mirror holding other files.
    checksums: dict[str, Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] | None = None
    retries: Annotated[int, Field(ge=0)] = 3
    # IMDB only: the most frequent words kept (others become the out-of-vocabulary id 2) and the
    # length every review is padded or cut to.
    vocabulary_size: Positive = 10000
    sequence_length: Positive = 200


class _ImagesBase(_DatasetBase):
    path: DirectoryPath
    image_size: tuple[Positive, Positive]  # height, width every image is resized to
    channels: Literal[1, 3] = 3


class ImageFolderDataset(_ImagesBase):
    """`path/<class name>/<image>`: one subfolder per class."""

    name: Literal["image-folder"]


class ImageListDataset(_ImagesBase):
    """A folder of images and a text file of `<file name> <label>` lines."""

    name: Literal["image-list"]
    labels_file: FilePath


class CsvTableDataset(_DatasetBase):
    """One example per row; `target` names the column to predict, the others are features."""

    name: Literal["csv-table"]
    path: FilePath
    target: str
    task: Literal["classification", "regression"] = "classification"


class CsvTextDataset(_DatasetBase):
    """One text and its label per row. The model takes the raw text and tokenizes it itself,
    with a vocabulary learnt from the training split only."""

    name: Literal["csv-text"]
    path: FilePath
    text: str  # the column holding the text
    target: str  # the column holding the label
    # The ids the tokenizer gives: 0 pads, 1 stands for every word outside the vocabulary, the
    # rest are the training split's most frequent words.
    vocabulary_size: Annotated[int, Field(ge=3)] = 10000
    sequence_length: Positive = 200  # words every text is padded (at the end) or cut to


class CsvSeriesDataset(_DatasetBase):
    """One value per row in time order; the model forecasts `column` from its past `window`."""

    name: Literal["csv-series"]
    path: FilePath
    column: str
    window: Positive = 12
    horizon: Positive = 1


DatasetSpec = Annotated[
    PackagedDataset
    | DownloadedDataset
    | ImageFolderDataset
    | ImageListDataset
    | CsvTableDataset
    | CsvTextDataset
    | CsvSeriesDataset,
    Field(discriminator="name"),
]


# --- preprocessing -------------------------------------------------------------------------------


class AugmentationSpec(_Strict):
    """Random image changes while training, as Keras preprocessing layers (inactive when serving).

    Rotation is a fraction of a full turn, shifts and zoom fractions of the image size.
    """

    rotation: Annotated[float, Field(ge=0, le=1)] = 0.0
    width_shift: Annotated[float, Field(ge=0, lt=1)] = 0.0
    height_shift: Annotated[float, Field(ge=0, lt=1)] = 0.0
    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "none"
    zoom: Annotated[float, Field(ge=0, lt=1)] = 0.0


class PreprocessingSpec(_Strict):
    labels: Literal["sparse", "one-hot"] = "sparse"
    cache: bool = True
    shuffle_buffer: Positive | None = None  # default: the whole training split
    augmentation: AugmentationSpec = AugmentationSpec()


# --- models --------------------------------------------------------------------------------------


class _ModelBase(_Strict):
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    batch_norm: bool = False
    l1: Annotated[float, Field(ge=0)] = 0.0
    l2: Annotated[float, Field(ge=0)] = 0.0


class _ConvBase(_ModelBase):
    # Scales every layer's filters and units; below 1 makes CI-sized versions of the classics.
    width: Annotated[float, Field(gt=0, le=4)] = 1.0


class SimpleCnnSpec(_ModelBase):
    architecture: Literal["simple-cnn"]
    conv_filters: list[Positive] = Field(default_factory=lambda: [32, 64], min_length=1)
    dense_units: Positive = 128
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.25


class MlpSpec(_ModelBase):
    architecture: Literal["mlp"]
    units: list[Positive] = Field(default_factory=lambda: [64, 64], min_length=1)
    activation: Literal["relu", "tanh", "sigmoid", "elu", "gelu"] = "relu"


class ClassicCnnSpec(_ConvBase):
    architecture: Literal["lenet5", "alexnet8", "vgg16", "inception10", "resnet18"]


class RnnStackSpec(_ModelBase):
    """Recurrent layers stacked; each but the last hands its whole sequence to the next."""

    architecture: Literal["rnn-stack"]
    cell: Literal["simple", "lstm", "gru"] = "lstm"
    units: list[Positive] = Field(default_factory=lambda: [64], min_length=1)
    bidirectional: bool = False


class EmbeddingLstmSpec(_ModelBase):
    architecture: Literal["embedding-lstm"]
    embedding_dim: Positive = 64
    units: list[Positive] = Field(default_factory=lambda: [64], min_length=1)


class Conv1dSpec(_ModelBase):
    architecture: Literal["conv1d"]
    filters: list[Positive] = Field(default_factory=lambda: [32, 64], min_length=1)
    kernel_size: Positive = 3
    dense_units: Positive = 64
    # Sequences of token ids get an embedding first; numeric sequences go straight in.
    embedding_dim: Positive = 32


class CustomModelSpec(_ModelBase):
    """A Keras model of the user's own: `function(input_shape) -> keras.Model`.

    The function's model takes the scaled input and ends in a feature vector; nnserve puts the
    raw-unit scaling in front of it and the head that names the outputs behind it.
    """

    architecture: Literal["custom"]
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


ModelSpec = Annotated[
    SimpleCnnSpec
    | MlpSpec
    | ClassicCnnSpec
    | RnnStackSpec
    | EmbeddingLstmSpec
    | Conv1dSpec
    | CustomModelSpec,
    Field(discriminator="architecture"),
]


# --- optimizer and training ----------------------------------------------------------------------


class ExponentialDecaySpec(_Strict):
    """rate = initial_rate * decay_rate ** (step / decay_steps), floored when staircase."""

    initial_rate: Annotated[float, Field(gt=0)]
    decay_rate: Annotated[float, Field(gt=0, le=1)]
    decay_steps: Positive
    staircase: bool = False


class OptimizerSpec(_Strict):
    name: Literal["sgd", "adagrad", "rmsprop", "adam"] = "adam"
    learning_rate: Annotated[float, Field(gt=0)] | ExponentialDecaySpec = 1e-3
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    nesterov: bool = False

    @model_validator(mode="after")
    def _momentum_only_where_it_exists(self) -> "OptimizerSpec":
        if self.name not in ("sgd", "rmsprop") and self.momentum:
            raise ValueError(f"momentum applies to sgd and rmsprop, not {self.name}")
        if self.nesterov and self.name != "sgd":
            raise ValueError("nesterov applies to sgd only")
        return self


class LossSpec(_Strict):
    """`asymmetric` charges over_price per unit a forecast is too high, under_price too low."""

    name: Literal[
        "mse", "categorical_crossentropy", "sparse_categorical_crossentropy", "asymmetric"
    ]
    from_logits: bool = False
    over_price: Annotated[float, Field(gt=0)] = 1.0
    under_price: Annotated[float, Field(gt=0)] = 1.0


class EarlyStoppingSpec(_Strict):
    monitor: str = "val_loss"
    patience: Annotated[int, Field(ge=0)] = 5
    min_delta: Annotated[float, Field(ge=0)] = 0.0
    restore_best_weights: bool = True


class TrainingSpec(_Strict):
    epochs: Positive
    batch_size: Positive = 32
    seed: int = 42
    # Default: sparse cross-entropy for classifiers, mean squared error for regressors.
    loss: LossSpec | None = None
    early_stopping: EarlyStoppingSpec | None = None
    # Used only where a GPU is present; float32 outputs either way.
    mixed_precision: bool = False
    xla: bool = False


class GateSpec(_Strict):
    """What a candidate must pass before it is published: the absolute thresholds, then the
    comparison with the stable version on the same test split (pipeline/gate.py)."""

    min_accuracy: Annotated[float, Field(ge=0, le=1)] = 0.0
    # Regressors: the largest test mean absolute error allowed, in the target's units.
    max_mae: Annotated[float, Field(gt=0)] | None = None
    # The test metric compared with the stable version's; default accuracy for classifiers,
    # mae for regressors. Higher is better for accuracy, lower for mae and loss.
    metric: Literal["accuracy", "mae", "loss"] | None = None
    # How much worse than the stable version the candidate may be, in the metric's units.
    max_regression: Annotated[float, Field(ge=0)] = 0.0


class RunParameters(_Strict):
    """Parameters of the retraining flow (pipeline/flow.py `retrain`) for scheduled runs; the
    deployment gives the spec path itself."""

    overrides: dict[str, Any] | None = None
    force: bool = False
    dataset_source: str | None = None


class RetrainingSpec(_Strict):
    """When the model is retrained, with what, and how many versions stay on disk."""

    cron: str | None = None  # none: runs start by hand (nnserve train, the Prefect UI)
    timezone: str = "UTC"  # of the cron expression, as an IANA name
    parameters: RunParameters = RunParameters()
    keep_versions: Positive = 5

    @field_validator("cron")
    @classmethod
    def _cron_prefect_accepts(cls, cron: str | None) -> str | None:
        if cron is None:
            return cron
        # The deployment's schedule is Prefect's CronSchedule: what it refuses, the spec refuses,
        # in its words. Imported here: Prefect takes seconds to import, and most specs need none.
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron=cron)
        except ValidationError as error:
            raise ValueError("; ".join(issue["msg"] for issue in error.errors())) from None
        return cron

    @field_validator("timezone")
    @classmethod
    def _known_time_zone(cls, timezone: str) -> str:
        if timezone not in zoneinfo.available_timezones():
            raise ValueError(
                f"unknown time zone {timezone!r}, expected an IANA name such as Europe/Berlin"
            )
        return timezone


DEFAULT_KEEP_VERSIONS = RetrainingSpec().keep_versions


class Spec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    dataset: DatasetSpec
    preprocessing: PreprocessingSpec = PreprocessingSpec()
    model: ModelSpec
    optimizer: OptimizerSpec = OptimizerSpec()
    training: TrainingSpec
    gate: GateSpec = GateSpec()
    retraining: RetrainingSpec | None = None

    @property
    def keep_versions(self) -> int:
        return self.retraining.keep_versions if self.retraining else DEFAULT_KEEP_VERSIONS

    @model_validator(mode="after")
    def _labels_match_the_loss(self) -> "Spec":
        loss = self.training.loss
        if loss is None:
            return self
        one_hot = self.preprocessing.labels == "one-hot"
        if loss.name == "categorical_crossentropy" and not one_hot:
            raise ValueError("training.loss categorical_crossentropy needs labels: one-hot")
        if loss.name == "sparse_categorical_crossentropy" and one_hot:
            raise ValueError("training.loss sparse_categorical_crossentropy needs labels: sparse")
        return self


def load_spec(
    path: str | Path,
    overrides: dict | None = None,
    overrides_from: str = "the overrides",
    dataset_source: str | None = None,
) -> Spec:
    """Read and validate a spec; `overrides` (nested keys) replace values of the file first, then
    `dataset_source` replaces where the data comes from (`dataset.source` of a downloaded
    dataset, `dataset.path` of a file or folder).

    A problem with a value the overrides gave is marked `(from <overrides_from>)`, so that the
    message does not send the user looking for it in the file. The parameters a `retraining`
    section gives scheduled runs are checked the same way now, not when the schedule fires.
    """
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as error:
        raise SpecError(f"{path}: cannot read spec file: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(document, dict):
        raise SpecError(f"{path}: expected a mapping of spec keys, got {type(document).__name__}")
    spec = _validated(path, document, overrides or {}, overrides_from, dataset_source)
    scheduled = spec.retraining.parameters if spec.retraining else None
    if scheduled and (scheduled.overrides or scheduled.dataset_source is not None):
        _validated(
            path,
            document,
            scheduled.overrides or {},
            "retraining.parameters.overrides",
            scheduled.dataset_source,
            source_from="retraining.parameters.dataset_source",
        )
    return spec


def _validated(
    path: Path,
    document: dict,
    overrides: dict,
    overrides_from: str,
    dataset_source: str | None,
    source_from: str = "dataset_source",
) -> Spec:
    document = merge(document, overrides)
    layers = [(overrides, overrides_from)]
    if dataset_source is not None:
        source = {"dataset": {_source_key(path, document, source_from): dataset_source}}
        document = merge(document, source)
        layers.append((source, source_from))
    try:
        return Spec.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(
            _describe(issue, layers)
            for issue in error.errors()
            if not _is_other_union_branch(issue)
        )
        raise SpecError(f"{path}: {problems}") from error


def _source_key(path: Path, document: dict, source_from: str) -> str:
    """The key of the dataset section that says where its data comes from."""
    dataset = document.get("dataset")
    name = dataset.get("name") if isinstance(dataset, dict) else None
    member = _DATASET_KINDS.get(name)
    for key in ("source", "path"):
        if member is not None and key in member.model_fields:
            return key
    raise SpecError(
        f"{path}: {source_from}: dataset {name!r} has no source or path to replace"
        + (" (it ships inside an installed package)" if member is PackagedDataset else "")
    )


def training_digest(spec: Spec) -> str:
    """What decides the model a spec trains, as a digest: the spec without its `gate` and
    `retraining` sections and its dataset's `checks`, which judge, schedule and vet the training
    but do not change the model it makes."""
    trained = spec.model_dump(
        mode="json", exclude={"gate": True, "retraining": True, "dataset": {"checks"}}
    )
    return hashlib.sha256(json.dumps(trained, sort_keys=True).encode()).hexdigest()


def merge(document: dict, overrides: dict) -> dict:
    """`overrides` laid over `document`, mapping into mapping, without changing either."""
    merged = copy.deepcopy(document)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _describe(issue: dict, layers: list[tuple[dict, str]]) -> str:
    keys = [part for part in issue["loc"] if not _is_union_tag(part)]
    if issue["type"] == "extra_forbidden":
        problem = "unknown key"
    elif issue["type"] in ("union_tag_invalid", "union_tag_not_found"):
        context = issue["ctx"]
        keys.append(context["discriminator"].strip("'"))  # pydantic quotes it
        problem = (
            "required"
            if issue["type"] == "union_tag_not_found"
            else f"unknown {context['tag']!r}, expected one of {context['expected_tags']}"
        )
    else:
        problem = issue["msg"]
    # The last layer that gave the value is where the user must look for it.
    origin = next((name for values, name in reversed(layers) if _overridden(keys, values)), None)
    if origin is not None:
        problem += f" (from {origin})"
    location = ".".join(str(key) for key in keys)
    return f"{location}: {problem}" if location else problem


def _overridden(keys: list, overrides: dict) -> bool:
    """Whether the value at `keys` is one the overrides gave, or lies inside one."""
    node = overrides
    for key in keys:
        if not isinstance(node, dict):
            return True  # inside a list or value the overrides gave whole
        if key not in node:
            return False
        node = node[key]
    return bool(keys)


def _is_other_union_branch(issue: dict) -> bool:
    # A learning rate given as a mapping is a schedule: the "not a number" complaint is noise.
    return "constrained-float" in issue["loc"] and isinstance(issue["input"], dict)


def _is_union_tag(part: object) -> bool:
    # pydantic puts the chosen member of a tagged union into the location; users never wrote it.
    return isinstance(part, str) and part in _UNION_TAGS | {"ExponentialDecaySpec"}


_UNION_TAGS = {
    tag
    for union, key in ((DatasetSpec, "name"), (ModelSpec, "architecture"))
    for member in get_args(get_args(union)[0])
    for tag in get_args(member.model_fields[key].annotation)
}
_DATASET_KINDS = {
    tag: member
    for member in get_args(get_args(DatasetSpec)[0])
    for tag in get_args(member.model_fields["name"].annotation)
}
