"""Publish a shipped spec's model at its served size, untrained, for benchmarks that need what a
call of it costs and not what it predicts (bench/model_server.py).

Run by hand (not in the test suite), from the repository root:

    .venv/bin/python bench/served_model.py pipeline/specs/cifar10-vgg16.yaml \
        --model-base-path /tmp/models/cifar10-vgg16

The model is built by the pipeline's own `model_for` (pipeline/flow.py: the spec's architecture,
width, batch normalization, augmentation layers and head, seeded by the spec) and exported by its
own `export_model` (pipeline/export.py: the same `serving_default` signature, input shape and
warm-up records as a trained model's), then published as the next version under
--model-base-path. Only the weights differ from a trained model's: they are the initial ones.
Datasets the pipeline would download are replaced by random examples with the dataset's shapes,
dtypes and classes, made by the pipeline's own dataset constructors, so that nothing is fetched;
datasets in installed packages are read as the pipeline reads them.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline import export
from pipeline.datasets import (
    FASHION_LABELS,
    Dataset,
    image_dataset,
    load_dataset,
    table_dataset,
    token_dataset,
)
from pipeline.flow import head_of, model_for
from pipeline.preprocess import split_dataset
from pipeline.spec import DownloadedDataset, Spec, load_spec
from service import model_repository

EXAMPLES = 1000  # enough for the splits' stratification and the warm-up records


def stand_in(spec: DownloadedDataset) -> Dataset:
    """Random examples shaped as the downloaded dataset's (pipeline/datasets.py `_download`)."""
    rng = np.random.default_rng(spec.seed)
    classes = rng.integers(0, 10, EXAMPLES)
    if spec.name in ("mnist", "fashion-mnist"):
        labels = FASHION_LABELS if spec.name == "fashion-mnist" else [str(d) for d in range(10)]
        return image_dataset(rng.integers(0, 256, (EXAMPLES, 28, 28), np.uint8), classes, labels)
    if spec.name == "cifar10":
        images = rng.integers(0, 256, (EXAMPLES, 32, 32, 3), np.uint8)
        # Any ten names do: they only name the answers, and the real ones come with the download.
        return image_dataset(images, classes, [f"class {i}" for i in range(10)])
    if spec.name == "imdb":
        lengths = rng.integers(20, 2 * spec.sequence_length, EXAMPLES)
        sequences = [list(rng.integers(1, 20_000, n)) for n in lengths]
        return token_dataset(
            sequences,
            classes % 2,
            ["negative", "positive"],
            spec.vocabulary_size,
            spec.sequence_length,
        )
    # boston-housing: 13 features, the median home value in $1000s
    return table_dataset(
        rng.uniform(0, 100, (EXAMPLES, 13)), rng.uniform(5, 50, EXAMPLES), [], "regression"
    )


def publish_untrained(spec: Spec, model_base_path: Path) -> int:
    dataset = (
        stand_in(spec.dataset)
        if isinstance(spec.dataset, DownloadedDataset)
        else load_dataset(spec.dataset)
    )
    splits = split_dataset(dataset, spec.dataset)
    model = model_for(spec, dataset, splits)
    metadata = {
        "model_name": spec.name,
        "task": dataset.task,
        "labels": dataset.labels,
        "spec": spec.model_dump(mode="json"),
        "untrained": "initial weights, for benchmarks (bench/served_model.py)",
    }
    with tempfile.TemporaryDirectory() as scratch:
        export_dir = export.export_model(
            model,
            dataset.input_spec,
            head_of(spec, dataset),
            Path(scratch) / "export",
            metadata,
            held_out=splits.test.features,
        )
        return model_repository.publish(export_dir, model_base_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--model-base-path", type=Path, required=True)
    args = parser.parse_args()
    spec = load_spec(args.spec)
    version = publish_untrained(spec, args.model_base_path)
    print(f"{spec.name}: version {version} in {args.model_base_path}")


if __name__ == "__main__":
    main()
