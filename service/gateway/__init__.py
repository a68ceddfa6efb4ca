"""`nnserve gateway`: TF Serving's REST API over HTTP, calling TF Serving's gRPC API.

Nothing here imports TensorFlow: the gateway speaks TF Serving's protobufs through nnserve's own
wire-compatible definitions in `service.wire`.
"""
