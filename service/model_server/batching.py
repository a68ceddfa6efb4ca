"""Server-side batching, as TF Serving's --enable_batching: concurrent runs of the same feeds and
fetches are merged along the 0th dimension into one session run, then split back."""

import functools
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

from service.model_server.errors import ServingError, invalid_argument

Key = tuple[tuple[str, ...], tuple[str, ...]]  # (feed tensor names, fetch tensor names)
Execute = Callable[[Key, Sequence[np.ndarray]], list[np.ndarray]]


@dataclass(frozen=True)
class BatchingParameters:
    """The fields of TF Serving's BatchingParameters this server honours, with its defaults."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self) -> None:
        if self.allowed_batch_sizes and self.allowed_batch_sizes[-1] != self.max_batch_size:
            raise ValueError(
                "Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                f"{self.allowed_batch_sizes[-1]}; expected {self.max_batch_size}"
            )


_WRAPPED_INT64 = (
    "max_batch_size",
    "batch_timeout_micros",
    "max_enqueued_batches",
    "num_batch_threads",
    "max_execution_batch_size",
)


@functools.cache
def _batching_parameters_class():
    """BatchingParameters as a message class: text format needs only the field names and types,
    and no installable package ships TF Serving's session_bundle_config.proto."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="nnserve/batching_parameters.proto",
        package="nnserve.batching",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = proto.message_type.add(name="BatchingParameters")
    optional, repeated = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL, 3
    fields = [(name, ".google.protobuf.Int64Value") for name in _WRAPPED_INT64]
    fields += [
        ("thread_pool_name", ".google.protobuf.StringValue"),
        ("enable_large_batch_splitting", ".google.protobuf.BoolValue"),
    ]
    for number, (name, type_name) in enumerate(fields, start=1):
        message.field.add(
            name=name,
            number=number,
            label=optional,
            type_name=type_name,
            type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        )
    message.field.add(
        name="allowed_batch_sizes",
        number=20,
        label=repeated,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    )
    message.field.add(
        name="pad_variable_length_inputs",
        number=21,
        label=optional,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("nnserve.batching.BatchingParameters")
    )


def read_batching_parameters(path: Path) -> BatchingParameters:
    try:
        text = path.read_text()
    except OSError as error:
        raise ValueError(
            f"cannot read batching parameters file '{path}': {error.strerror}"
        ) from error
    try:
        parsed = text_format.Parse(text, _batching_parameters_class()())
    except text_format.ParseError as error:
        raise ValueError(
            f"Invalid protobuf file: '{path}': Error parsing text-format "
            f"tensorflow.serving.BatchingParameters: {error}"
        ) from error
    values = {
        name: getattr(parsed, name).value
        for name in _WRAPPED_INT64
        if parsed.HasField(name) and name in BatchingParameters.__dataclass_fields__
    }
    return BatchingParameters(
        **values,
        allowed_batch_sizes=tuple(parsed.allowed_batch_sizes),
        pad_variable_length_inputs=parsed.pad_variable_length_inputs,
    )


@dataclass
class _Task:
    values: Sequence[np.ndarray]
    rows: int
    done: threading.Event = field(default_factory=threading.Event)
    outputs: list[np.ndarray] | None = None
    error: Exception | None = None


@dataclass
class _Batch:
    key: Key
    deadline: float
    tasks: list[_Task] = field(default_factory=list)
    rows: int = 0


class Batcher:
    """TF Serving's scheduling: a batch runs once a batch thread is free and the batch is full or
    its first task has waited batch_timeout_micros; while every batch thread is busy, arriving
    tasks join the open batch. At most num_batch_threads batches run at a time."""

    def __init__(self, parameters: BatchingParameters, execute: Execute) -> None:
        self._parameters = parameters
        self._execute = execute
        self._timeout = parameters.batch_timeout_micros / 1e6
        self._threads = max(parameters.num_batch_threads, 1)
        self._running = 0  # batches being run, by batch threads or by their callers
        self._open: dict[Key, _Batch] = {}
        self._ready: list[_Batch] = []
        self._changed = threading.Condition()
        self._closed = False
        self._workers = [
            threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
            for i in range(self._threads)
        ]
        for worker in self._workers:
            worker.start()

    def submit(self, key: Key, values: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run as part of a batch; blocks until this task's share of the outputs is ready."""
        task = _Task(values, self._rows(values))
        with self._changed:
            alone = self._runs_at_once(key)
            if alone:
                self._running += 1
            else:
                self._enqueue(key, task)
        if alone:
            self._run(_Batch(key, 0.0, [task], task.rows))
            with self._changed:
                self._running -= 1
                if self._ready or self._open:
                    self._changed.notify()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def queued_tasks(self) -> int:
        """Tasks waiting for their batch to start, as TF Serving's NumEnqueuedTasks."""
        with self._changed:
            batches = [*self._ready, *self._open.values()]
            return sum(len(batch.tasks) for batch in batches)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _runs_at_once(self, key: Key) -> bool:
        """Without a timeout, a task that finds a batch thread free and no batch waiting would make
        a batch of itself at once: it runs on the caller's thread instead, which saves handing
        it to a batch thread and back (two thread switches, the whole cost of batching when
        requests come one at a time)."""
        return (
            self._timeout == 0
            and self._running < self._threads
            and not self._ready
            and key not in self._open
        )

    def _enqueue(self, key: Key, task: _Task) -> None:
        batch = self._open.get(key)
        # Batch threads wake only for a batch to run or a new deadline to wait for: a wake-up
        # per task would cost each request a thread switch.
        wake = batch is None
        if batch is not None and batch.rows + task.rows > self._parameters.max_batch_size:
            self._close(key)
            batch, wake = None, True
        if batch is None:
            if len(self._ready) >= self._parameters.max_enqueued_batches:
                raise ServingError(
                    grpc.StatusCode.UNAVAILABLE,
                    "The batch scheduling queue to which this task was submitted is full; "
                    f"currently {len(self._ready)} batches enqueued and max_enqueued_batches "
                    f"is {self._parameters.max_enqueued_batches}",
                )
            batch = self._open[key] = _Batch(key, time.monotonic() + self._timeout)
        batch.tasks.append(task)
        batch.rows += task.rows
        if batch.rows == self._parameters.max_batch_size:
            self._close(key)
            wake = True
        # While every batch thread is busy, the one that finishes first looks at the queue.
        if wake and self._running < self._threads:
            self._changed.notify()

    def _rows(self, values: Sequence[np.ndarray]) -> int:
        if not values:
            raise invalid_argument("Batching Run() must have at least one input tensor")
        if any(value.ndim == 0 for value in values):
            raise invalid_argument("Batching Run() input tensors must have at least one dimension")
        rows = {value.shape[0] for value in values}
        if len(rows) != 1:
            raise invalid_argument(
                "Batching Run() input tensors must have equal 0th-dimension size"
            )
        (count,) = rows
        if count > self._parameters.max_batch_size:
            raise invalid_argument(
                f"Task size {count} is larger than maximum input batch size "
                f"{self._parameters.max_batch_size}"
            )
        return count

    def _close(self, key: Key) -> None:
        self._ready.append(self._open.pop(key))

    def _next_batch(self, finished: bool) -> _Batch | None:
        """The next batch to run, once it may start; `finished`: this thread has just run one."""
        with self._changed:
            if finished:
                self._running -= 1
            while True:
                now = time.monotonic()
                free = self._running < self._threads
                if free:
                    for key, batch in list(self._open.items()):
                        if batch.deadline <= now:
                            self._close(key)
                    if self._ready:
                        batch = self._ready.pop(0)
                        self._running += 1
                        # One thread is woken per change: pass the wake-up on if more waits.
                        if self._running < self._threads and (self._ready or self._open):
                            self._changed.notify()
                        return batch
                if self._closed:
                    return None
                deadlines = [batch.deadline for batch in self._open.values()] if free else []
                self._changed.wait(timeout=min(deadlines) - now if deadlines else None)

    def _work(self) -> None:
        batch = self._next_batch(finished=False)
        while batch is not None:
            self._run(batch)
            batch = self._next_batch(finished=True)

    def _run(self, batch: _Batch) -> None:
        try:
            outputs = self._execute(batch.key, self._merge(batch))
            self._split(batch, outputs)
        except Exception as error:
            for task in batch.tasks:
                task.error = error
        for task in batch.tasks:
            task.done.set()

    def _merge(self, batch: _Batch) -> list[np.ndarray]:
        merged = []
        for index, name in enumerate(batch.key[0]):
            parts = [task.values[index] for task in batch.tasks]
            if len({part.shape[1:] for part in parts}) > 1:
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Tensors with name '{name}' from different tasks have different shapes and "
                    "padding is turned off. Set pad_variable_length_inputs to true, or ensure that "
                    "all tensors with the same name have equal dimensions starting with the first "
                    "dim.",
                )
            # One task's tensor is fed as it came: concatenating would only copy it.
            merged.append(
                self._pad(parts[0] if len(parts) == 1 else np.concatenate(parts), batch.rows)
            )
        return merged

    def _pad(self, merged: np.ndarray, rows: int) -> np.ndarray:
        target = next((size for size in self._parameters.allowed_batch_sizes if size >= rows), rows)
        if target == rows:
            return merged
        return np.concatenate([merged, np.repeat(merged[-1:], target - rows, axis=0)])

    def _split(self, batch: _Batch, outputs: list[np.ndarray]) -> None:
        for output in outputs:
            if output.ndim == 0:
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION, "Batched output tensor has 0 dimensions"
                )
            if output.shape[0] < batch.rows:
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "Batched output tensor's 0th dimension does not equal the sum of the 0th "
                    "dimension sizes of the input tensors",
                )
        start = 0
        for task in batch.tasks:
            task.outputs = [output[start : start + task.rows] for output in outputs]
            start += task.rows
