"""`nnserve model-server`: TensorFlow Serving's gRPC API, served from an in-process TensorFlow."""
