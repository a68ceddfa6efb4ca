"""Downloads against a real HTTP server on 127.0.0.1: checksums, retries, resumed transfers, a
cache that never keeps a bad file and that processes fetching at once share; then each upstream
format read back."""

import hashlib
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from support import REPO_ROOT, free_port, wait_until

from pipeline import downloads
from pipeline.datasets import FASHION_LABELS, load_dataset
from pipeline.spec import DownloadedDataset

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def no_retry_wait(monkeypatch):
    monkeypatch.setattr(downloads, "FIRST_RETRY_WAIT_SECONDS", 0.01)


def remote(data: bytes = PAYLOAD) -> downloads.RemoteFile:
    return downloads.RemoteFile("data.bin", sha256(data))


def cache_holds(cache_dir: Path) -> list[str]:
    """The names in the cache, checking that the lock file fetches leave beside a file is empty."""
    for lock in cache_dir.glob("*.lock"):
        assert lock.stat().st_size == 0, lock
    return sorted(p.name for p in cache_dir.iterdir())


def test_a_download_is_verified_cached_and_not_fetched_again(file_server, tmp_path):
    file_server.files["data.bin"] = PAYLOAD
    path = downloads.fetch(file_server.url, remote(), tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert downloads.fetch(file_server.url, remote(), tmp_path) == path
    assert len(file_server.requests) == 1
    assert cache_holds(tmp_path) == ["data.bin", "data.bin.lock"]


def test_a_corrupt_file_is_an_error_and_leaves_no_copy_in_the_cache(file_server, tmp_path):
    file_server.files["data.bin"] = PAYLOAD[:-1] + b"X"
    with pytest.raises(downloads.DownloadError) as caught:
        downloads.fetch(file_server.url, remote(), tmp_path, retries=1)
    message = str(caught.value)
    assert "data.bin" in message and remote().sha256 in message and "after 2 attempts" in message
    assert cache_holds(tmp_path) == ["data.bin.lock"]
    assert len(file_server.requests) == 2


def test_a_transfer_cut_mid_file_resumes_where_it_stopped(file_server, tmp_path):
    file_server.files["data.bin"] = PAYLOAD
    file_server.cut_next.add("data.bin")
    path = downloads.fetch(file_server.url, remote(), tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert file_server.requests == [("data.bin", None), ("data.bin", f"bytes={len(PAYLOAD) // 2}-")]
    assert cache_holds(tmp_path) == ["data.bin", "data.bin.lock"]


def test_a_server_without_ranges_gets_the_whole_file_again(file_server, tmp_path):
    file_server.files["data.bin"] = PAYLOAD
    file_server.cut_next.add("data.bin")
    file_server.ranges = False
    assert downloads.fetch(file_server.url, remote(), tmp_path).read_bytes() == PAYLOAD
    assert len(file_server.requests) == 2


def test_a_cached_file_that_went_bad_is_downloaded_again(file_server, tmp_path):
    file_server.files["data.bin"] = PAYLOAD
    (tmp_path / "data.bin").write_bytes(b"truncated")
    assert downloads.fetch(file_server.url, remote(), tmp_path).read_bytes() == PAYLOAD
    assert len(file_server.requests) == 1


FETCH_IN_A_PROCESS = """
import logging, sys
from pathlib import Path
from pipeline import downloads

logging.basicConfig(level=logging.INFO)
source, sha256, cache_dir = sys.argv[1:]
print(downloads.fetch(source, downloads.RemoteFile("data.bin", sha256), Path(cache_dir)))
"""


def fetch_in_a_process(url: str, cache_dir: Path, log: Path) -> subprocess.Popen:
    """`downloads.fetch` of data.bin in a process of its own, as another flow run on the same
    worker would; it prints the path and logs to `log`."""
    with open(log, "w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-c", FETCH_IN_A_PROCESS, url, remote().sha256, str(cache_dir)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )


def test_processes_fetching_one_file_take_turns_and_download_it_once(
    file_server, tmp_path, processes
):
    file_server.files["data.bin"] = PAYLOAD
    file_server.hold_midway = threading.Event()
    cache, logs = tmp_path / "cache", [tmp_path / "first.log", tmp_path / "second.log"]
    try:
        processes.append(fetch_in_a_process(file_server.url, cache, logs[0]))
        wait_until(lambda: file_server.requests, 60, "the first request", processes[0])
        processes.append(fetch_in_a_process(file_server.url, cache, logs[1]))
        # With the first transfer halfway, the second process waits for its turn; one that did
        # not would request the file too.
        wait_until(
            lambda: (
                "waiting for another process" in logs[1].read_text()
                or len(file_server.requests) > 1
            ),
            60,
            "the second process to wait for the first or to request the file itself",
            processes[1],
        )
    finally:
        file_server.hold_midway.set()
    for process, log in zip(processes, logs, strict=True):
        printed, _ = process.communicate(timeout=60)
        assert process.returncode == 0, log.read_text()
        assert printed.strip() == str(cache / "data.bin")
    assert "waiting for another process fetching" in logs[1].read_text()
    assert file_server.requests == [("data.bin", None)]
    assert (cache / "data.bin").read_bytes() == PAYLOAD
    assert cache_holds(cache) == ["data.bin", "data.bin.lock"]


def test_an_unreachable_server_fails_after_the_retries(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(downloads.DownloadError, match="after 3 attempts"):
        downloads.fetch(url, remote(), tmp_path, retries=2)
    assert cache_holds(tmp_path) == ["data.bin.lock"]


def test_a_folder_path_is_a_source_too(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "data.bin").write_bytes(PAYLOAD)
    path = downloads.fetch(str(mirror), remote(), tmp_path / "cache")
    assert path.read_bytes() == PAYLOAD


def dataset_spec(name: str, server, files: dict[str, bytes], tmp_path, **extra):
    server.files.update(files)
    return DownloadedDataset(
        name=name,
        source=server.url,
        cache_dir=tmp_path,
        checksums={file_name: sha256(data) for file_name, data in files.items()},
        **extra,
    )


def test_the_catalog_names_every_file_keras_downloads_with_its_sha256():
    names = {name: [r.name for r in files] for name, (_, files) in downloads.CATALOG.items()}
    assert names == {
        "mnist": ["mnist.npz"],
        "fashion-mnist": [
            "train-labels-idx1-ubyte.gz",
            "train-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
        ],
        "cifar10": ["cifar-10-python.tar.gz"],
        "imdb": ["imdb.npz"],
        "boston-housing": ["boston_housing.npz"],
    }
    digests = [r.sha256 for _, files in downloads.CATALOG.values() for r in files]
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in digests)


def test_mnist_npz(file_server, datasets_upstream, tmp_path):
    dataset = load_dataset(dataset_spec("mnist", file_server, datasets_upstream["mnist"], tmp_path))
    assert dataset.features.shape == (300, 28, 28, 1) and dataset.features.dtype == np.uint8
    assert dataset.labels == [str(d) for d in range(10)]
    assert dataset.input_spec.to_json()["image_size"] == [28, 28]
    assert dataset.input_spec.value_range == (0.0, 255.0)
    assert dataset.input_spec.dtype == "float32"  # what clients and the gateway send


def test_fashion_mnist_idx_files(file_server, datasets_upstream, tmp_path):
    files = datasets_upstream["fashion-mnist"]
    dataset = load_dataset(dataset_spec("fashion-mnist", file_server, files, tmp_path))
    assert dataset.features.shape == (300, 28, 28, 1)
    assert dataset.labels == FASHION_LABELS
    assert sorted(np.unique(dataset.targets)) == list(range(10))


def test_cifar10_pickle_tarball(file_server, datasets_upstream, tmp_path):
    files = datasets_upstream["cifar10"]
    dataset = load_dataset(dataset_spec("cifar10", file_server, files, tmp_path))
    assert dataset.features.shape == (120, 32, 32, 3)
    assert dataset.labels[:2] == ["airplane", "automobile"] and len(dataset.labels) == 10
    assert dataset.input_spec.to_json()["channels"] == 3


def test_imdb_npz_padded_to_the_sequence_length(file_server, datasets_upstream, tmp_path):
    files = datasets_upstream["imdb"]
    spec = dataset_spec("imdb", file_server, files, tmp_path, sequence_length=30)
    dataset = load_dataset(spec)
    assert dataset.features.shape == (200, 30) and dataset.features.dtype == np.int32
    assert dataset.labels == ["negative", "positive"]
    assert dataset.input_spec.name == "sequence" and dataset.input_spec.vocabulary_size == 10000
    # Shorter reviews are padded in front with zeros and end with their last word.
    short = next(row for row in dataset.features if row[0] == 0)
    assert short[-1] != 0


def test_boston_housing_is_a_regression_table(file_server, datasets_upstream, tmp_path):
    files = datasets_upstream["boston-housing"]
    dataset = load_dataset(dataset_spec("boston-housing", file_server, files, tmp_path))
    assert dataset.task == "regression" and dataset.labels == []
    assert dataset.features.shape == (120, 13) and dataset.input_spec.name == "features"
    assert dataset.targets.dtype == np.float32 and dataset.targets.min() < dataset.targets.max()


def test_downloads_go_to_nnserve_data_dir_unless_the_spec_names_a_cache_dir(
    fresh_settings, monkeypatch, file_server, datasets_upstream, tmp_path
):
    monkeypatch.setenv("NNSERVE_DATA_DIR", str(tmp_path / "data"))
    files = datasets_upstream["mnist"]
    file_server.files.update(files)
    checksums = {name: sha256(data) for name, data in files.items()}
    spec = DownloadedDataset(name="mnist", source=file_server.url, checksums=checksums)

    load_dataset(spec)
    assert cache_holds(tmp_path / "data") == ["mnist.npz", "mnist.npz.lock"]
    load_dataset(spec.model_copy(update={"cache_dir": tmp_path / "spec-cache"}))
    assert cache_holds(tmp_path / "spec-cache") == ["mnist.npz", "mnist.npz.lock"]
    assert len(file_server.requests) == 2  # the spec's own cache did not use the other copy


def test_without_nnserve_data_dir_downloads_go_to_the_users_cache(fresh_settings, monkeypatch):
    monkeypatch.delenv("NNSERVE_DATA_DIR", raising=False)
    assert downloads.default_cache_dir() == Path.home() / ".cache" / "nnserve" / "datasets"


def test_checksums_for_files_the_dataset_does_not_have_are_an_error(tmp_path):
    from pipeline.datasets import DatasetError

    spec = DownloadedDataset(name="mnist", cache_dir=tmp_path, checksums={"mnist.zip": "0" * 64})
    with pytest.raises(DatasetError, match=r"mnist\.zip.*mnist\.npz"):
        load_dataset(spec)


def test_a_pickle_that_is_not_arrays_is_refused(file_server, tmp_path):
    import io
    import os

    from pipeline.datasets import DatasetError

    hostile = np.empty(1, dtype=object)
    hostile[0] = os.system  # unpickling this would import os.system
    buffer = io.BytesIO()
    np.savez(buffer, x_train=hostile, y_train=np.zeros(1), x_test=hostile, y_test=np.zeros(1))
    spec = dataset_spec("imdb", file_server, {"imdb.npz": buffer.getvalue()}, tmp_path)
    with pytest.raises(DatasetError, match="only arrays allowed"):
        load_dataset(spec)
