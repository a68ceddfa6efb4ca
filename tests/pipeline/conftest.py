"""Dataset files in their exact upstream formats, generated small, and a local HTTP server that
serves them the way a real one does (ranges included) or breaks the way real ones break."""

import contextlib
import gzip
import hashlib
import io
import pickle
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

CIFAR_LABELS = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _idx(array: np.ndarray) -> bytes:
    """IDX: two zero bytes, type 0x08 (unsigned byte), the number of dimensions, each size as a
    big-endian 32-bit integer, then the values; gzip-compressed as the upstream files are."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(size).to_bytes(4, "big") for size in array.shape
    )
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def _images_by_class(rng, count: int, shape: tuple[int, ...], classes: int):
    """Images whose brightness pattern depends on their class, so tiny models can learn them."""
    labels = np.arange(count) % classes
    rng.shuffle(labels)
    base = rng.integers(0, 60, size=(count, *shape))
    stripe = (labels * (shape[0] // classes))[:, None]
    rows = np.arange(shape[0])[None, :]
    bright = (rows >= stripe) & (rows < stripe + max(1, shape[0] // classes))
    base = base + 190 * bright.reshape(count, shape[0], *([1] * (len(shape) - 1)))
    return np.clip(base, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def _cifar_tarball(rng) -> bytes:
    images, labels = _images_by_class(rng, 6 * 20, (32, 32, 3), 10)
    # CIFAR rows are the red plane, then green, then blue.
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        members = {
            name: {
                b"batch_label": name.encode(),
                b"labels": [int(v) for v in labels[i * 20 : (i + 1) * 20]],
                b"data": rows[i * 20 : (i + 1) * 20],
                b"filenames": [f"{name}_{j}.png".encode() for j in range(20)],
            }
            for i, name in enumerate(names)
        }
        members["batches.meta"] = {
            b"label_names": [label.encode() for label in CIFAR_LABELS],
            b"num_cases_per_batch": 20,
            b"num_vis": 3072,
        }
        for name, content in members.items():
            data = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _imdb(rng) -> bytes:
    def reviews(count: int):
        labels = rng.integers(0, 2, size=count)
        sequences = np.empty(count, dtype=object)
        for index, label in enumerate(labels):
            length = int(rng.integers(5, 40))
            # Positive reviews use low word ids, negative ones high ids; 1 starts each review.
            words = rng.integers(4, 200, size=length) + (0 if label else 300)
            sequences[index] = [1, *(int(w) for w in words)]
        return sequences, labels.astype(np.int64)

    x_train, y_train = reviews(160)
    x_test, y_test = reviews(40)
    return _npz(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def upstream_files() -> dict[str, dict[str, bytes]]:
    """Each downloadable dataset's files by name, small, in the format its upstream serves."""
    rng = np.random.default_rng(0)
    mnist_x, mnist_y = _images_by_class(rng, 300, (28, 28), 10)
    fashion_x, fashion_y = _images_by_class(rng, 300, (28, 28), 10)
    boston_x = rng.uniform(0, 100, size=(120, 13))
    boston_y = boston_x[:, 5] * 0.3 + boston_x[:, 12] * -0.2 + 25 + rng.normal(0, 1, 120)
    return {
        "mnist": {
            "mnist.npz": _npz(
                x_train=mnist_x[:250],
                y_train=mnist_y[:250],
                x_test=mnist_x[250:],
                y_test=mnist_y[250:],
            )
        },
        "fashion-mnist": {
            "train-labels-idx1-ubyte.gz": _idx(fashion_y[:250]),
            "train-images-idx3-ubyte.gz": _idx(fashion_x[:250]),
            "t10k-labels-idx1-ubyte.gz": _idx(fashion_y[250:]),
            "t10k-images-idx3-ubyte.gz": _idx(fashion_x[250:]),
        },
        "cifar10": {"cifar-10-python.tar.gz": _cifar_tarball(rng)},
        "imdb": {"imdb.npz": _imdb(rng)},
        "boston-housing": {"boston_housing.npz": _npz(x=boston_x, y=boston_y)},
    }


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class FileServer:
    """What the local server holds and how it misbehaves, and the requests it saw."""

    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    cut_next: set[str] = field(default_factory=set)  # next request for these ends mid-file
    ranges: bool = True
    # When given, every body stops halfway until the test sets the event: transfers overlap.
    hold_midway: threading.Event | None = None
    requests: list[tuple[str, str | None]] = field(default_factory=list)


@pytest.fixture(scope="session")
def datasets_upstream() -> dict[str, dict[str, bytes]]:
    return upstream_files()


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    with _serving(FileServer(url="")) as state:
        yield state


@pytest.fixture(scope="module")
def dataset_server(datasets_upstream) -> Iterator[FileServer]:
    """Every generated upstream file, served well."""
    files = {name: data for group in datasets_upstream.values() for name, data in group.items()}
    with _serving(FileServer(url="", files=files)) as state:
        yield state


@contextlib.contextmanager
def _serving(state: FileServer) -> Iterator[FileServer]:

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            state.requests.append((name, self.headers.get("Range")))
            data = state.files.get(name)
            if data is None:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            start = 0
            requested = self.headers.get("Range")
            if requested and state.ranges:
                start = int(requested.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_error(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                    return
                self.send_response(HTTPStatus.PARTIAL_CONTENT)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(HTTPStatus.OK)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes" if state.ranges else "none")
            self.end_headers()
            if name in state.cut_next:
                state.cut_next.discard(name)
                # Half the promised bytes, then the connection drops.
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            if state.hold_midway is not None:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                state.hold_midway.wait(timeout=60)
                body = body[len(body) // 2 :]
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
