"""What is wrong with a dataset that training would not notice, found before it starts.

Training takes whatever it is given: one `labels.txt` line `1550.png five` among digits makes an
eleventh class with one example, the model is trained, passes its gate and goes live. So the
examples are checked first, and each finding names the files or lines it is about:
- `rare_class`: a class with far fewer examples than the others (a typo in a label, or a file in
  the wrong folder);
- `mixed_labels`: class names of two kinds, numbers and words;
- `mixed_images`: image files of different sizes or modes (all are resized and converted alike,
  which may hide that some do not belong);
- `split_duplicates`: the same example in two splits, so that the test measures memory.
The spec's `dataset.checks` says, per check, whether a finding is logged (`warn`, the default),
stops training (`error`) or is not looked for (`off`).

Plain functions of arrays and lists: no TensorFlow, no Prefect.
"""

import hashlib
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.spec import DatasetChecks
from service.version_contract import InputSpec

# A class with at most this fraction of the median class's examples is rare.
RARE_FRACTION = 0.1
# Files or lines named per finding: enough to find the pattern, not a flood.
SHOWN = 3
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)$")

# A standard logger, or Prefect's run logger (an adapter) inside a flow run.
Log = logging.Logger | logging.LoggerAdapter


@dataclass(frozen=True)
class Finding:
    check: str  # a field of DatasetChecks
    message: str


@dataclass(frozen=True)
class ImageFile:
    """An image file as it was read, before it was resized and converted."""

    width: int
    height: int
    mode: str  # Pillow's: L, RGB, RGBA, I;16, P, ...

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


def enforce(findings: Sequence[Finding], checks: DatasetChecks, log: Log) -> str | None:
    """Log the findings the spec makes warnings; return the message of those it makes errors
    (None when there are none), for the caller to raise."""
    errors = []
    for finding in findings:
        level = getattr(checks, finding.check)
        if level == "error":
            errors.append(finding.message)
        elif level == "warn":
            log.warning(
                "%s (dataset.checks.%s: warn; error stops training, off silences it)",
                finding.message,
                finding.check,
            )
    if not errors:
        return None
    return "; ".join(errors) + " (dataset.checks makes this an error)"


def check_examples(
    targets: np.ndarray,
    labels: Sequence[str],
    sources: Sequence[str],
    image_files: Sequence[ImageFile],
    checks: DatasetChecks,
) -> list[Finding]:
    """The findings of the checks on a classifier's labels and image files that are not off."""
    findings = []
    if labels and checks.rare_class != "off":
        findings += rare_classes(targets, labels, sources)
    if labels and checks.mixed_labels != "off":
        findings += mixed_labels(targets, labels, sources)
    if image_files and checks.mixed_images != "off":
        findings += mixed_images(image_files, sources)
    return findings


def rare_classes(
    targets: np.ndarray, labels: Sequence[str], sources: Sequence[str] = ()
) -> list[Finding]:
    """A finding for each class with at most RARE_FRACTION of the median class's examples."""
    counts = np.bincount(targets, minlength=len(labels))
    if len(labels) < 2:
        return []
    median = float(np.median(counts))
    return [
        Finding(
            "rare_class",
            f"class {labels[class_id]!r} has {_examples(int(count))}"
            f"{_where(targets, class_id, sources)} where the median class has {median:g}: "
            "a mislabelled example, or a class too small to learn",
        )
        for class_id, count in enumerate(counts)
        if count <= RARE_FRACTION * median
    ]


def mixed_labels(
    targets: np.ndarray, labels: Sequence[str], sources: Sequence[str] = ()
) -> list[Finding]:
    """A finding when some class names are numbers and others words: the fewer kind named."""
    numbers = [i for i, label in enumerate(labels) if _NUMBER.match(label.strip())]
    words = sorted(set(range(len(labels))) - set(numbers))
    if not numbers or not words:
        return []
    odd, usual, kind, other = (
        (numbers, words, "number", "words")
        if len(numbers) < len(words)
        else (words, numbers, "word", "numbers")
    )
    named = ", ".join(f"{labels[i]!r}{_where(targets, i, sources)}" for i in odd[:SHOWN])
    is_kind = f"is a {kind}" if len(odd) == 1 else f"are {kind}s"
    usual_named = ", ".join(repr(labels[i]) for i in usual[:SHOWN]) + _more(len(usual))
    return [
        Finding(
            "mixed_labels",
            f"labels mix numbers and words: class {named}{_more(len(odd))} {is_kind} where "
            f"{len(usual)} classes are {other} ({usual_named})",
        )
    ]


def mixed_images(image_files: Sequence[ImageFile], sources: Sequence[str] = ()) -> list[Finding]:
    """A finding for image files of more than one size, and one for more than one mode."""
    findings = []
    for what, key in (("sizes", lambda f: f.size), ("modes", lambda f: f.mode)):
        by_value: dict[str, list[int]] = defaultdict(list)
        for index, image_file in enumerate(image_files):
            by_value[key(image_file)].append(index)
        if len(by_value) < 2:
            continue
        ordered = sorted(by_value.items(), key=lambda item: -len(item[1]))
        (usual, usual_files), others = ordered[0], ordered[1:]
        described = "; ".join(
            f"{len(indices)} {value} ({_named(indices, sources)})" for value, indices in others
        )
        findings.append(
            Finding(
                "mixed_images",
                f"images of mixed {what}: {len(usual_files)} are {usual}, but {described}; all "
                "are made alike for training, which may hide files that do not belong",
            )
        )
    return findings


def split_duplicates(
    features: np.ndarray, splits: Mapping[str, np.ndarray], sources: Sequence[str] = ()
) -> list[Finding]:
    """A finding when an example (its features, byte for byte) is in more than one split.

    `features` are the whole dataset's, to name the examples; `splits` each split's features.
    """
    in_splits: dict[bytes, list[str]] = defaultdict(list)
    for name, split in splits.items():
        for digest in set(_digests(split)):
            in_splits[digest].append(name)
    shared = {digest: names for digest, names in in_splits.items() if len(names) > 1}
    if not shared:
        return []
    where: dict[bytes, list[int]] = defaultdict(list)
    for index, digest in enumerate(_digests(features)):
        if digest in shared:
            where[digest].append(index)
    pairs = Counter(" and ".join(names) for names in shared.values())
    examples = "; ".join(
        " = ".join(_source(i, sources) for i in where[digest][:SHOWN])
        for digest in list(shared)[:SHOWN]
    )
    counted = ", ".join(f"{count} in the {pair} splits" for pair, count in sorted(pairs.items()))
    return [
        Finding(
            "split_duplicates",
            f"{_examples(len(shared))} found in more than one split ({counted}): {examples}"
            f"{_more(len(shared))}; a test example seen in training makes the test measure memory",
        )
    ]


def summary(
    name: str,
    targets: np.ndarray,
    labels: Sequence[str],
    input_spec: InputSpec,
    image_files: Sequence[ImageFile] = (),
) -> str:
    """One line: the examples, the classes and how many of each, and the input."""
    parts = [f"dataset {name}: {_examples(len(targets))}"]
    if labels:
        counts = np.bincount(targets, minlength=len(labels))
        classes = ", ".join(
            f"{label} ({count})" for label, count in zip(labels, counts, strict=True)
        )
        parts.append(f"{len(labels)} classes: {classes}")
    else:
        parts.append(f"targets {float(np.min(targets)):g}..{float(np.max(targets)):g}")
    shape = "x".join(str(dim) for dim in input_spec.shape)
    value_range = (
        f", values {input_spec.value_range[0]:g}..{input_spec.value_range[1]:g}"
        if input_spec.value_range is not None
        else ""
    )
    parts.append(f"input {input_spec.name} {shape} {input_spec.dtype}{value_range}".rstrip())
    if image_files:
        files = Counter(f"{image_file.size} {image_file.mode}" for image_file in image_files)
        parts.append(
            "image files (width x height, mode): "
            + ", ".join(f"{count} {kind}" for kind, count in files.most_common())
        )
    return "; ".join(parts)


def _digests(features: np.ndarray) -> list[bytes]:
    if features.dtype == object:  # texts: their characters, not the objects' addresses
        rows = (str(row).encode() for row in features)
    else:
        rows = (row.tobytes() for row in np.ascontiguousarray(features))
    return [hashlib.blake2b(row, digest_size=16).digest() for row in rows]


def _examples(count: int) -> str:
    return f"{count} example{'' if count == 1 else 's'}"


def _where(targets: np.ndarray, class_id: int, sources: Sequence[str]) -> str:
    indices = np.flatnonzero(targets == class_id)
    return f" ({_named(list(indices), sources)})" if sources and len(indices) else ""


def _named(indices: Sequence[int], sources: Sequence[str]) -> str:
    return ", ".join(_source(i, sources) for i in indices[:SHOWN]) + _more(len(indices))


def _source(index: int, sources: Sequence[str]) -> str:
    return sources[index] if sources else f"example {index}"


def _more(count: int) -> str:
    return f", and {count - SHOWN} more" if count > SHOWN else ""
