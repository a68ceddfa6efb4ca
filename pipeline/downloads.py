"""Fetching dataset files: retries, resumed transfers, SHA-256 checks, and a cache that keeps only
files that passed their check, shared safely by processes fetching at the same time."""

import contextlib
import fcntl
import hashlib
import http.client
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec

from service.settings import get_settings

logger = logging.getLogger(__name__)

KERAS_DATASETS = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
CHUNK_BYTES = 1 << 20
TIMEOUT_SECONDS = 60
FIRST_RETRY_WAIT_SECONDS = 0.5


class DownloadError(RuntimeError):
    """A dataset file could not be fetched, or what arrived is not the file the catalog names."""


@dataclass(frozen=True)
class RemoteFile:
    name: str
    sha256: str


# The files `keras.datasets` downloads, at their canonical locations. The Fashion-MNIST digests
# are of the upstream IDX files, which Keras itself fetches without a check.
CATALOG: dict[str, tuple[str, tuple[RemoteFile, ...]]] = {
    "mnist": (
        KERAS_DATASETS,
        (
            RemoteFile(
                "mnist.npz", "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
            ),
        ),
    ),
    "fashion-mnist": (
        KERAS_DATASETS,
        (
            RemoteFile(
                "train-labels-idx1-ubyte.gz",
                "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
            ),
            RemoteFile(
                "train-images-idx3-ubyte.gz",
                "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
            ),
            RemoteFile(
                "t10k-labels-idx1-ubyte.gz",
                "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
            ),
            RemoteFile(
                "t10k-images-idx3-ubyte.gz",
                "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
            ),
        ),
    ),
    "cifar10": (
        "https://www.cs.toronto.edu/~kriz/",
        (
            RemoteFile(
                "cifar-10-python.tar.gz",
                "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
            ),
        ),
    ),
    "imdb": (
        KERAS_DATASETS,
        (
            RemoteFile(
                "imdb.npz", "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f"
            ),
        ),
    ),
    "boston-housing": (
        KERAS_DATASETS,
        (
            RemoteFile(
                "boston_housing.npz",
                "f553886a1f8d56431e820c5b82552d9d95cfcb96d1e678153f8839538947dff5",
            ),
        ),
    ),
}


def default_cache_dir() -> Path:
    """Where downloads go when the spec names no `cache_dir`: `$NNSERVE_DATA_DIR`, else
    ~/.cache/nnserve/datasets."""
    return get_settings().data_dir


def fetch(source: str, remote: RemoteFile, cache_dir: Path, retries: int = 3) -> Path:
    """The verified local copy of `source/remote.name`, downloaded if the cache lacks it.

    `source` is an http(s) base URL, a folder path or any fsspec URL (s3://, gs://, ...). An
    http transfer that breaks is resumed where it stopped when the server allows ranges.
    Processes fetching the same file into one cache take turns (a lock file `<name>.lock` beside
    it): the first downloads, the others wait and then find its verified copy.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / remote.name
    # A verified copy is read without the lock, so a read-only cache that holds it still works.
    if _is_verified(target, remote):
        return target
    with _locked(target):
        if _is_verified(target, remote):  # fetched by the process that held the lock before
            return target
        if target.is_file():
            logger.warning("%s in the cache fails its checksum; downloading it again", target)
            target.unlink()
        return _download(source.rstrip("/") + "/" + remote.name, remote, target, retries)


def _is_verified(path: Path, remote: RemoteFile) -> bool:
    try:
        return sha256_of(path) == remote.sha256
    except FileNotFoundError:  # not there, or a bad copy the lock holder removed meanwhile
        return False


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Holds the exclusive lock on `<target>.lock` across processes. The kernel releases it
    when the holder exits, however it exits, so a killed fetch never blocks the next one; the
    empty lock file stays, as removing it could let two processes hold two different locks."""
    with open(target.with_name(f"{target.name}.lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process fetching %s", target)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _download(url: str, remote: RemoteFile, target: Path, retries: int) -> Path:
    """`url` into `target`, through `<target>.part`: only the lock holder writes to it, so a
    transfer resumes from its own bytes alone."""
    partial = target.with_name(f"{target.name}.part")
    last_problem = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(FIRST_RETRY_WAIT_SECONDS * 2 ** (attempt - 1))
        try:
            _transfer(url, partial)
        except (OSError, http.client.HTTPException, urllib.error.URLError) as error:
            last_problem = f"{type(error).__name__}: {error}"
            logger.warning("download of %s broke (%s), attempt %d", url, last_problem, attempt + 1)
            continue
        digest = sha256_of(partial)
        if digest == remote.sha256:
            os.replace(partial, target)
            return target
        partial.unlink()
        last_problem = f"SHA-256 {digest}, expected {remote.sha256}"
        logger.warning("download of %s is corrupt (%s), attempt %d", url, last_problem, attempt + 1)
    partial.unlink(missing_ok=True)
    raise DownloadError(f"cannot fetch {url} after {retries + 1} attempts: {last_problem}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _transfer(url: str, partial: Path) -> None:
    if url.startswith(("http://", "https://")):
        _transfer_http(url, partial)
    else:
        with fsspec.open(url, "rb") as remote, open(partial, "wb") as local:
            shutil.copyfileobj(remote, local, CHUNK_BYTES)


def _transfer_http(url: str, partial: Path) -> None:
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url)
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as error:
        if error.code == 416:  # what we hold is already the whole file, or more than it
            partial.unlink()
        raise
    with response:
        resumed = response.status == 206
        if have and not resumed:
            logger.info("%s: the server does not resume transfers; starting again", url)
        with open(partial, "ab" if resumed else "wb") as local:
            shutil.copyfileobj(response, local, CHUNK_BYTES)
        # http.client ends a body cut short as if it were complete: compare with what was promised.
        missing = response.length or 0
        if missing:
            raise http.client.IncompleteRead(b"", missing)
