"""How much one Predict request may ask the model server to hold (TensorFlow-free, so the CLI
can show the defaults without importing TensorFlow)."""

import os
from dataclasses import dataclass

# TF Serving's default for --grpc_max_threads: four per CPU this process may run on.
DEFAULT_GRPC_MAX_THREADS = 4 * len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class FeedLimits:
    """Elements one input may hold, all inputs of a request together, and one string input: a
    string element costs tens of bytes decoded however short it is, where a number costs 1 to 8."""

    max_tensor_elements: int = 16_777_216
    max_request_elements: int = 33_554_432
    max_string_elements: int = 1_048_576
