"""The anchor for bench/gateway.py: a REST-to-gRPC gateway as tutorials write it.

It imports TensorFlow and the official tensorflow_serving.apis modules and converts with
tf.make_tensor_proto / tf.make_ndarray. Only :predict with the row format, enough for the bench.
Run: python bench/naive_gateway.py PORT BACKEND_ADDRESS
"""

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import numpy as np
import tensorflow as tf
import uvicorn
from fastapi import FastAPI, Request
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


@asynccontextmanager
async def connect(app: FastAPI) -> AsyncIterator[None]:
    async with grpc.aio.insecure_channel(sys.argv[2]) as channel:
        app.state.stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        yield


app = FastAPI(lifespan=connect)


@app.post("/v1/models/{name}:predict")
async def predict(name: str, request: Request) -> dict:
    body = await request.json()
    grpc_request = predict_pb2.PredictRequest()
    grpc_request.model_spec.name = name
    instances = np.array(body["instances"], dtype=np.float32)
    grpc_request.inputs["image"].CopyFrom(tf.make_tensor_proto(instances))
    response = await app.state.stub.Predict(grpc_request, timeout=10)
    outputs = {key: tf.make_ndarray(value) for key, value in response.outputs.items()}
    return {
        "predictions": [
            {key: value[i].tolist() for key, value in outputs.items()}
            for i in range(len(instances))
        ]
    }


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
