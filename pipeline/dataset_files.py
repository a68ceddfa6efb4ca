"""A dataset's own files as the spec names them: class folders, a labels file, a CSV header.

Read without numpy, pandas or TensorFlow, so that `nnserve train` reports a missing file, a
malformed labels line or a misspelt column within a second, before it imports anything heavy;
pipeline/datasets.py reads the same files through these functions when it loads them.
"""

import csv
from pathlib import Path

from pipeline.spec import (
    CsvSeriesDataset,
    CsvTableDataset,
    CsvTextDataset,
    DatasetSpec,
    ImageFolderDataset,
    ImageListDataset,
)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class DatasetError(ValueError):
    """A dataset that cannot be read, with what was wrong and what was expected."""


def check_files(spec: DatasetSpec) -> None:
    """Raise DatasetError for what the spec's dataset files lack; packaged and downloaded
    datasets are checked when they are loaded."""
    if isinstance(spec, ImageFolderDataset):
        require_images(spec, [path for _, paths in class_folders(spec) for path in paths])
    elif isinstance(spec, ImageListDataset):
        entries = labels_file_entries(spec)
        require_images(spec, [spec.path / name for _, name, _ in entries])
        for number, name, _ in entries:
            if not (spec.path / name).is_file():
                raise DatasetError(
                    f"{spec.labels_file}:{number}: no image file {name!r} in {spec.path}"
                )
    elif isinstance(spec, CsvTableDataset):
        require_columns(spec.path, spec.target)
    elif isinstance(spec, CsvTextDataset):
        require_columns(spec.path, spec.text, spec.target)
    elif isinstance(spec, CsvSeriesDataset):
        require_columns(spec.path, spec.column)


def class_folders(spec: ImageFolderDataset) -> list[tuple[str, list[Path]]]:
    """Each class (a subfolder of `path`, in sorted order) with its image files, sorted."""
    classes = sorted(entry.name for entry in spec.path.iterdir() if entry.is_dir())
    if len(classes) < 2:
        raise DatasetError(
            f"dataset.path {spec.path}: expected one subfolder per class, found {classes}"
        )
    return [
        (
            name,
            sorted(p for p in (spec.path / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
        )
        for name in classes
    ]


def labels_file_entries(spec: ImageListDataset) -> list[tuple[int, str, str]]:
    """`(line number, file name, label)` for each line of the labels file that is not blank."""
    try:
        lines = spec.labels_file.read_text().splitlines()
    except OSError as error:
        raise DatasetError(f"dataset.labels_file {spec.labels_file}: {error.strerror}") from error
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise DatasetError(
                f"{spec.labels_file}:{number}: expected '<file name> <label>', got {line!r}"
            )
        entries.append((number, parts[0], parts[1]))
    return entries


def require_images(spec: ImageFolderDataset | ImageListDataset, paths: list[Path]) -> None:
    if not paths:
        raise DatasetError(
            f"dataset.path {spec.path}: no image files; expected some ending in "
            f"{', '.join(sorted(IMAGE_SUFFIXES))}"
        )


def require_columns(path: Path, *columns: str) -> None:
    """Raise DatasetError unless the CSV file's header row names every one of `columns`."""
    try:
        with path.open(newline="") as file:
            header = next(csv.reader(file), [])
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"dataset.path {path}: cannot read CSV ({error})") from error
    for column in columns:
        if column not in header:
            raise DatasetError(f"{path}: no column {column!r}; the columns are {header}")
