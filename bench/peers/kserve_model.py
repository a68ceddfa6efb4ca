"""KServe's Python model server with a custom model, as KServe's documentation writes one: a
`kserve.Model` whose `load` reads the SavedModel and whose (plain) `predict` answers the v1
protocol's `{"instances": [...]}`. KServe listens on all interfaces; the benchmark calls 127.0.0.1.
Run: BENCH_SAVEDMODEL=DIR python bench/peers/kserve_model.py --model_name NAME --http_port PORT \
         --grpc_port PORT"""

import argparse

from kserve import Model, ModelServer, model_server
from savedmodel import SavedModel


class Digits(Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.model: SavedModel | None = None
        self.load()

    def load(self) -> bool:
        self.model = SavedModel()
        self.ready = True
        return self.ready

    def predict(self, payload: dict, headers: dict[str, str] | None = None) -> dict:
        return {"predictions": self.model.predict(payload["instances"])}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    args, _ = parser.parse_known_args()
    ModelServer().start([Digits(args.model_name)])
