"""BentoML with the SavedModel, as BentoML's documentation writes a service: a class decorated
`@bentoml.service` (one worker by default) that loads the model in `__init__`, and a plain
`@bentoml.api` method taking the request's `instances`.
Run: BENCH_SAVEDMODEL=DIR python -m bentoml serve bentoml_service:Digits \
         --working-dir bench/peers --host 127.0.0.1 --port PORT"""

import bentoml
from savedmodel import SavedModel


@bentoml.service
class Digits:
    def __init__(self) -> None:
        self.model = SavedModel()

    @bentoml.api
    def predict(self, instances: list) -> dict:
        return {"predictions": self.model.predict(instances)}
