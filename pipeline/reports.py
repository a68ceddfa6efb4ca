"""The reports every run writes into its folder: model summary with parameter and multiply-add
counts, learning curves, confusion matrix and per-class precision/recall, and the weights."""

import csv
import math
from pathlib import Path

import keras
import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only; training machines have no display
from matplotlib import pyplot as plt

SUMMARY_FILE = "model_summary.txt"
CURVES_FILE = "curves.png"
CONFUSION_FILE = "confusion_matrix.png"
CONFUSION_TABLE_FILE = "confusion_matrix.csv"  # rows: true class, columns: predicted class
PER_CLASS_FILE = "per_class.csv"
WEIGHTS_FILE = "weights.txt"

RECURRENT_GATES = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}


def multiply_adds(layer: keras.layers.Layer) -> int:
    """Multiply-adds one example costs in this layer's matrix products and convolutions
    (normalization counts one per element it scales; pooling, additions and lookups none)."""
    kind = type(layer).__name__
    if isinstance(layer, keras.Model):
        return sum(multiply_adds(inner) for inner in layer.layers)
    if kind == "Bidirectional":
        return multiply_adds(layer.forward_layer) + multiply_adds(layer.backward_layer)
    if kind in RECURRENT_GATES:
        steps, features = _input_shape(layer)[1:3]
        units = layer.cell.units
        return RECURRENT_GATES[kind] * (features + units) * units * steps
    if kind == "Dense":
        positions = math.prod(_output_shape(layer)[1:-1])
        return positions * _input_shape(layer)[-1] * layer.units
    if kind in ("Conv1D", "Conv2D"):
        output = _output_shape(layer)
        per_position = math.prod(layer.kernel_size) * _input_shape(layer)[-1] // layer.groups
        return math.prod(output[1:-1]) * per_position * layer.filters
    if kind in ("BatchNormalization", "Normalization"):
        return math.prod(_output_shape(layer)[1:])
    return 0


def _input_shape(layer) -> tuple:
    return tuple(layer.input.shape)


def _output_shape(layer) -> tuple:
    return tuple(layer.output.shape)


def write_model_summary(model: keras.Model, path: Path) -> None:
    rows = []
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        rows.append(
            (
                layer.name,
                type(layer).__name__,
                str(tuple(shape.shape)) if shape is not None else "?",
                f"{layer.count_params():,}",
                f"{multiply_adds(layer):,}",
            )
        )
    header = ("layer", "type", "output shape", "parameters", "multiply-adds")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row) -> str:
        return "  ".join(
            cell.rjust(width) if index >= 3 else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    total_macs = sum(multiply_adds(layer) for layer in model.layers)
    text = [
        f"model {model.name}",
        line(header),
        "  ".join("-" * width for width in widths),
        *(line(row) for row in rows),
        "",
        f"parameters: {model.count_params():,} ({trainable:,} trainable)",
        f"multiply-adds per example: {total_macs:,}",
    ]
    path.write_text("\n".join(text) + "\n")


def plot_curves(history_csv: Path, path: Path) -> None:
    """Loss and the main metric by epoch, for training and validation."""
    with open(history_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    epochs = [int(row["epoch"]) + 1 for row in rows]
    metric = "accuracy" if rows and "accuracy" in rows[0] else "mae"
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, name in zip(axes, ("loss", metric), strict=True):
        for prefix, label in (("", "train"), ("val_", "validation")):
            if rows and f"{prefix}{name}" in rows[0]:
                axis.plot(epochs, [float(row[f"{prefix}{name}"]) for row in rows], label=label)
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def classification_report(
    targets: np.ndarray, predicted: np.ndarray, labels: list[str], run_dir: Path
) -> np.ndarray:
    """Confusion matrix (PNG and CSV) and per-class precision and recall (CSV); returns the
    matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    classes = list(range(len(labels)))
    matrix = confusion_matrix(targets, predicted, labels=classes)
    precision, recall, _, support = precision_recall_fscore_support(
        targets, predicted, labels=classes, zero_division=0
    )
    with open(run_dir / PER_CLASS_FILE, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", "precision", "recall", "support"])
        for label, p, r, s in zip(labels, precision, recall, support, strict=True):
            writer.writerow([label, f"{p:.4f}", f"{r:.4f}", int(s)])
    with open(run_dir / CONFUSION_TABLE_FILE, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true \\ predicted", *labels])
        writer.writerows([label, *map(int, row)] for label, row in zip(labels, matrix, strict=True))

    size = max(4.0, 0.5 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(classes, labels, rotation=90 if len(labels) > 10 else 0)
    axis.set_yticks(classes, labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for (row, column), count in np.ndenumerate(matrix):
        axis.text(column, row, str(count), ha="center", va="center", fontsize=8)
    figure.tight_layout()
    figure.savefig(run_dir / CONFUSION_FILE)
    plt.close(figure)
    return matrix


def dump_weights(model: keras.Model, path: Path) -> None:
    """Every weight, layer by layer, under a line naming it and its shape."""
    with open(path, "w") as handle:
        for layer in model.layers:
            for weight in layer.weights:
                values = np.asarray(weight.numpy())
                handle.write(f"# {layer.name} / {weight.path} shape {list(values.shape)}\n")
                rows = (
                    values.reshape(1, -1)
                    if values.ndim < 2
                    else values.reshape(-1, values.shape[-1])
                )
                np.savetxt(handle, rows, fmt="%.8g")
