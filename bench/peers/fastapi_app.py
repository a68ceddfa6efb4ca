"""FastAPI + uvicorn with the SavedModel in process, as a user writes it by hand: a pydantic
body, a plain (threadpool) endpoint, uvicorn's defaults.
Run: BENCH_SAVEDMODEL=DIR python bench/peers/fastapi_app.py PORT"""

import sys

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from savedmodel import SavedModel

model = SavedModel()
app = FastAPI()


class PredictRequest(BaseModel):
    instances: list


@app.post("/predict")
def predict(request: PredictRequest) -> dict:
    return {"predictions": model.predict(request.instances)}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]))
