"""LitServe with the SavedModel, as LitServe's documentation writes an API: `setup` loads the
model, `decode_request` / `predict` / `encode_response` answer `{"instances": [...]}`, and the
server runs with its defaults (one worker process on the CPU, an API server in front of it).
Run: BENCH_SAVEDMODEL=DIR python bench/peers/litserve_api.py PORT"""

import sys

import litserve as ls
from savedmodel import SavedModel


class Digits(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = SavedModel()

    def decode_request(self, request: dict) -> list:
        return request["instances"]

    def predict(self, instances: list) -> list[dict]:
        return self.model.predict(instances)

    def encode_response(self, predictions: list[dict]) -> dict:
        return {"predictions": predictions}


if __name__ == "__main__":
    ls.LitServer(Digits()).run(host="127.0.0.1", port=int(sys.argv[1]))
