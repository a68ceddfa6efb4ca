"""The data plane: REST bodies in, model server calls, REST bodies out. Knows no HTTP.

TF Serving's REST layer reads JSON values as the dtypes the signature declares, so each predict
needs the signature: it is fetched with GetModelMetadata and cached for a few seconds per model
target, and forgotten whenever the model server rejects a request made with it. The same
signature lets the gateway refuse inputs with wrong names, dtypes or shapes before calling it.

Size-1 dimensions may be left out, as TF Serving allows. A tensor whose shape fits the
signature only once they are ignored is sent as it is first: TF Serving answers a [3] tensor for
half_plus_two's [-1, 1] input with [3] outputs, and clients rely on that. If the model server
refuses it (INVALID_ARGUMENT, as for an [8, 8] digit for the CNN's [-1, 8, 8, 1] input), it is
sent once more with the declared shape restored, and the gateway remembers, per model target,
signature, input and rank sent, to restore such tensors straight away.

A request that names no version goes to the model's `stable` version label whenever the model
config gives it one (service/serving_config.py), so gateway clients switch exactly when a
promotion or a rollback moves the label. Until the model server has read the config that gave a
model its first label it refuses the label, and such a request goes to its own default instead,
the highest version it serves, as before the label.

Large bodies are parsed and decoded, large answers encoded, and all images decoded by a bounded
pool of worker threads, so that the event loop keeps answering other requests meanwhile; small
ones stay on the loop, where a hop to a thread would cost more than the work.
"""

import asyncio
import contextlib
import functools
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import orjson
from google.protobuf import json_format

from service import wire
from service.gateway import codec, images
from service.gateway.backend import BackendError, TFServingBackend
from service.gateway.catalog import CatalogError, ModelCatalog
from service.gateway.errors import InvalidRequest, Limit
from service.settings import Settings, env_name

DEFAULT_SIGNATURE = "serving_default"
AVAILABLE = "AVAILABLE"
PROBABILITIES = "probabilities"
# TF Serving's answer to a label its config does not give the model.
UNKNOWN_LABEL = "Unrecognized servable version label"
# How many (model target, signature, input, rank) the gateway remembers to restore (LRU).
RESTORING_REMEMBERED = 1024
# Bodies larger than this are parsed and decoded, and answers with more output elements than
# this are encoded, by the worker threads rather than on the event loop. Measured here: decoding
# takes 60-70 us per KiB of body, encoding 0.15-0.6 us per output element, a hop to a worker and
# back 26 us on an idle machine; at these sizes the work moved (2.5-10 ms) is about 100 hops.
OFF_LOOP_BODY_BYTES = 64 * 1024
OFF_LOOP_OUTPUT_ELEMENTS = 16 * 1024

T = TypeVar("T")


@dataclass(frozen=True)
class ModelTarget:
    """The model a URL names: `/v1/models/{name}[/versions/{version}|/labels/{label}]`."""

    name: str
    version: int | None = None
    label: str | None = None

    def model_spec(self, signature_name: str = "") -> wire.ModelSpec:
        spec = wire.ModelSpec(name=self.name, signature_name=signature_name)
        if self.version is not None:
            spec.version.value = self.version
        elif self.label is not None:
            spec.version_label = self.label
        return spec


@dataclass(frozen=True)
class Limits:
    """What the data plane refuses requests by (each from a setting of the same name)."""

    max_name_length: Limit
    max_json_values: Limit
    max_tensor_elements: Limit
    max_request_elements: Limit
    max_images: Limit
    max_image_pixels: Limit
    max_request_pixels: Limit

    @classmethod
    def from_settings(cls, settings: Settings) -> "Limits":
        return cls(
            **{
                name: Limit(getattr(settings, name), env_name(name))
                for name in cls.__dataclass_fields__
            }
        )


class DataPlane:
    def __init__(
        self,
        backend: TFServingBackend,
        catalog: ModelCatalog,
        limits: Limits,
        workers: Executor,
        signature_ttl_seconds: float = 5.0,
    ) -> None:
        self._backend = backend
        self._catalog = catalog
        self._limits = limits
        self._workers = workers
        self._ttl = signature_ttl_seconds
        self._signatures: dict[ModelTarget, _Signatures] = {}
        self._restoring: OrderedDict[tuple, None] = OrderedDict()

    # --- TF Serving's REST API ------------------------------------------------------------

    async def predict(self, target: ModelTarget, body: bytes) -> bytes:
        self._check_names(target)
        large = len(body) > OFF_LOOP_BODY_BYTES
        document = await self._run(large, codec.parse_json, body, self._limits.max_json_values)
        signature_name = codec.request_signature_name(document) or DEFAULT_SIGNATURE
        self._check_names(signature_name=signature_name)
        return await self._on_default_route(
            target,
            lambda routed: self._predict_document(routed, signature_name, document, large),
        )

    async def classify(self, target: ModelTarget, body: bytes) -> bytes:
        return await self._examples_call(
            target,
            body,
            wire.ClassificationRequest,
            self._backend.classify,
            codec.classify_response_json,
        )

    async def regress(self, target: ModelTarget, body: bytes) -> bytes:
        return await self._examples_call(
            target, body, wire.RegressionRequest, self._backend.regress, codec.regress_response_json
        )

    async def model_status(self, target: ModelTarget) -> bytes:
        # Every version, as TF Serving lists them: no label is implied here.
        self._check_names(target)
        with self._explaining_not_found(target):
            response = await self._backend.model_status(target.model_spec())
        return orjson.dumps(_to_dict(response))

    async def model_metadata(self, target: ModelTarget) -> bytes:
        self._check_names(target)

        async def metadata(routed: ModelTarget) -> bytes:
            model_spec, signature_defs = await self._backend.signature_defs(routed.model_spec())
            return orjson.dumps(
                {
                    "model_spec": _to_dict(model_spec),
                    "metadata": {"signature_def": _to_dict(signature_defs)},
                }
            )

        return await self._on_default_route(target, metadata)

    # --- beyond TF Serving ----------------------------------------------------------------

    async def list_models(self) -> bytes:
        """Every configured model with its versions (from the model server) and labels."""
        models = self._catalog.models()
        statuses = await asyncio.gather(
            *(self._versions(ModelTarget(model.name)) for model in models), return_exceptions=True
        )
        listing = []
        for model, versions in zip(models, statuses, strict=True):
            if isinstance(versions, BaseException):
                # A model the server does not know (yet) has no versions; anything else is news.
                if not isinstance(versions, BackendError) or versions.code != "NOT_FOUND":
                    raise versions
                versions = []
            listing.append(
                {
                    "name": model.name,
                    "versions": versions,
                    "labels": {label: str(v) for label, v in sorted(model.labels.items())},
                }
            )
        return orjson.dumps({"models": listing})

    async def ready(self) -> tuple[bool, dict[str, str]]:
        """Whether the model server answers and every configured model has an AVAILABLE version."""
        try:
            models = self._catalog.models()
        except CatalogError as error:
            return False, {"model config": error.message}
        if not models:
            reachable = await self._backend.reachable()
            return reachable, {"backend": "reachable" if reachable else "unreachable"}
        report = {}
        for model in models:
            try:
                versions = await self._versions(ModelTarget(model.name))
                state = AVAILABLE if any(v["state"] == AVAILABLE for v in versions) else "LOADING"
            except BackendError as error:
                state = error.code
            report[model.name] = state
        return all(state == AVAILABLE for state in report.values()), report

    async def classify_images(
        self, target: ModelTarget, uploads: Sequence[images.Upload], top_k: int, invert: bool
    ) -> bytes:
        """Top-k classes with label names for each uploaded image (nnserve models only)."""
        self._check_names(target)
        if not uploads:
            raise codec.CodecError("no image uploaded: send one or more files in the 'files' field")
        if len(uploads) > self._limits.max_images.value:
            raise InvalidRequest(
                f"{len(uploads)} images uploaded, more than the limit of "
                f"{self._limits.max_images} per request"
            )
        with self._explaining_not_found(target):
            version = await self._served_version(self._routed(target))
        metadata = self._catalog.version_metadata(target.name, version)
        spec = images.image_input(metadata.get("input"))
        # Decoding even one image can take a second: never on the event loop.
        batch = await self._run(
            True,
            images.to_model_batch,
            uploads,
            spec,
            self._limits.max_image_pixels,
            self._limits.max_request_pixels,
            invert,
        )
        tensor = codec.array_to_tensor(batch)
        fixed = ModelTarget(target.name, version=version)
        response = await self._predict(fixed, DEFAULT_SIGNATURE, {spec.name: tensor})
        if PROBABILITIES not in response.outputs:
            raise codec.CodecError(f"model {target.name} has no '{PROBABILITIES}' output")
        probabilities = codec.tensor_to_array(response.outputs[PROBABILITIES])
        labels = metadata.get("labels") or [str(i) for i in range(probabilities.shape[-1])]
        results = [
            {"file": upload.filename, "top_k": _top_k(row, labels, top_k)}
            for upload, row in zip(uploads, probabilities, strict=True)
        ]
        return orjson.dumps(
            {"model_spec": {"name": target.name, "version": str(version)}, "results": results}
        )

    # --- helpers --------------------------------------------------------------------------

    async def _predict_document(
        self, target: ModelTarget, signature_name: str, document, large: bool
    ) -> bytes:
        input_specs = await self._input_specs(target, signature_name)
        decode = functools.partial(
            codec.predict_inputs,
            document,
            input_specs,
            check_shapes=True,
            max_tensor_elements=self._limits.max_tensor_elements,
            max_request_elements=self._limits.max_request_elements,
        )
        inputs = await self._run(large, decode)
        response = await self._predict_restoring(target, signature_name, inputs)
        return await self._run(
            _element_count(response.outputs) > OFF_LOOP_OUTPUT_ELEMENTS,
            codec.predict_response_json,
            response.outputs,
            inputs.columnar,
        )

    async def _predict(
        self, target: ModelTarget, signature_name: str, tensors: dict[str, wire.TensorProto]
    ) -> wire.PredictResponse:
        request = wire.PredictRequest(model_spec=target.model_spec(signature_name))
        for name, tensor in tensors.items():
            request.inputs[name].CopyFrom(tensor)
        try:
            return await self._backend.predict(request)
        except BackendError:
            self._signatures.pop(target, None)
            raise

    async def _predict_restoring(
        self, target: ModelTarget, signature_name: str, inputs: codec.PredictInputs
    ) -> wire.PredictResponse:
        """Predict, restoring size-1 dimensions where the model server needs them (see above)."""

        def key(name: str) -> tuple:
            rank = len(inputs.tensors[name].tensor_shape.dim)
            return target, signature_name, name, rank

        pending = dict(inputs.restorable)
        for name in list(pending):
            if key(name) in self._restoring:
                self._restoring.move_to_end(key(name))
                codec.set_shape(inputs.tensors[name], pending.pop(name))
        try:
            return await self._predict(target, signature_name, inputs.tensors)
        except BackendError as error:
            if error.code != "INVALID_ARGUMENT" or not pending:
                raise
        remembered = [key(name) for name in pending]  # the ranks as sent
        for name, shape in pending.items():
            codec.set_shape(inputs.tensors[name], shape)
        response = await self._predict(target, signature_name, inputs.tensors)
        for restoring in remembered:
            self._restoring[restoring] = None
            if len(self._restoring) > RESTORING_REMEMBERED:
                self._restoring.popitem(last=False)
        return response

    async def _examples_call(
        self,
        target: ModelTarget,
        body: bytes,
        request_type: type[wire.ClassificationRequest] | type[wire.RegressionRequest],
        call: Callable[..., Awaitable],
        answer: Callable[..., bytes],
    ) -> bytes:
        """Classify or Regress: a request of tf.Examples, sent with `call`, answered by `answer`."""
        self._check_names(target)
        large = len(body) > OFF_LOOP_BODY_BYTES
        document = await self._run(large, codec.parse_json, body, self._limits.max_json_values)
        signature_name = codec.request_signature_name(document)
        self._check_names(signature_name=signature_name)
        examples = await self._run(large, codec.examples_to_input, document)

        async def send(routed: ModelTarget) -> bytes:
            request = request_type(model_spec=routed.model_spec(signature_name), input=examples)
            return answer(await call(request))

        return await self._on_default_route(target, send)

    async def _on_default_route(
        self, target: ModelTarget, call: Callable[[ModelTarget], Awaitable[T]]
    ) -> T:
        """`call(target)`; a target that names no version goes to the model's `stable` label
        when the model config gives it one, so clients switch exactly when the label moves."""
        routed = self._routed(target)
        with self._explaining_not_found(target):
            if routed is target:
                return await call(target)
            try:
                return await call(routed)
            except BackendError as error:
                if error.code != "INVALID_ARGUMENT" or not error.message.startswith(UNKNOWN_LABEL):
                    raise
            # The model server has not yet read the config that gave the model its label: until
            # it does, its own default, the highest version it serves, is the one to answer.
            return await call(target)

    @contextlib.contextmanager
    def _explaining_not_found(self, target: ModelTarget) -> Iterator[None]:
        """The model server's NOT_FOUND for a model or version the repository holds but the
        model config leaves out says so, rather than "Could not find any versions"."""
        try:
            yield
        except BackendError as error:
            if error.code != "NOT_FOUND" or target.label is not None:
                raise
            reason = self._catalog.not_served(target.name, target.version)
            if reason is None:
                raise
            raise BackendError("NOT_FOUND", reason) from None

    async def _run(self, off_loop: bool, function: Callable[..., T], *args) -> T:
        """`function(*args)`, by a worker thread when `off_loop` (each hop costs tens of us)."""
        if not off_loop:
            return function(*args)
        return await asyncio.get_running_loop().run_in_executor(self._workers, function, *args)

    def _check_names(self, target: ModelTarget | None = None, signature_name: str = "") -> None:
        # The model server echoes names into its error messages: one past gRPC's metadata limit
        # (16 KB) came back as RESOURCE_EXHAUSTED, which clients read as "retry later".
        limit = self._limits.max_name_length
        names = [("signature name", signature_name)]
        if target is not None:
            names += [("model name", target.name), ("version label", target.label or "")]
        for kind, name in names:
            if len(name) > limit.value:
                raise InvalidRequest(
                    f"{kind} '{name[:40]}...' is {len(name)} characters long, longer than the "
                    f"limit of {limit}"
                )

    def _routed(self, target: ModelTarget) -> ModelTarget:
        if target.version is None and target.label is None:
            label = self._catalog.default_label(target.name)
            if label is not None:
                return ModelTarget(target.name, label=label)
        return target

    async def _versions(self, target: ModelTarget) -> list[dict]:
        response = await self._backend.model_status(target.model_spec())
        return _to_dict(response)["model_version_status"]

    async def _served_version(self, target: ModelTarget) -> int:
        """The AVAILABLE version a target names, as the model server reports it: a model or
        version it does not serve is NOT_FOUND before anything is read for it."""
        if target.label is not None:
            model = self._catalog.model(target.name)
            if model is None or target.label not in model.labels:
                raise BackendError("INVALID_ARGUMENT", f"{UNKNOWN_LABEL}: {target.label}")
            target = ModelTarget(target.name, version=model.labels[target.label])
        versions = await self._versions(target)
        available = [int(v["version"]) for v in versions if v["state"] == AVAILABLE]
        if not available:
            request = (
                f"Latest({target.name})"
                if target.version is None
                else f"Specific({target.name}, {target.version})"
            )
            raise BackendError("NOT_FOUND", f"Servable not found for request: {request}")
        return max(available)

    async def _input_specs(
        self, target: ModelTarget, signature_name: str
    ) -> dict[str, codec.SignatureInput]:
        cached = self._signatures.get(target)
        if cached is None or cached.expires < time.monotonic():
            _, signature_defs = await self._backend.signature_defs(target.model_spec())
            cached = _Signatures(time.monotonic() + self._ttl, signature_defs.signature_def)
            self._signatures[target] = cached
        specs = cached.input_specs.get(signature_name)
        if specs is None:
            if signature_name not in cached.signature_defs:
                raise BackendError(
                    "INVALID_ARGUMENT",
                    f'Serving signature name: "{signature_name}" not found in signature def',
                )
            specs = codec.signature_input_specs(cached.signature_defs[signature_name])
            cached.input_specs[signature_name] = specs
        return specs


@dataclass
class _Signatures:
    """A model target's signatures as last fetched, and the input specs read from them."""

    expires: float
    signature_defs: Mapping[str, wire.SignatureDef]
    input_specs: dict[str, dict[str, codec.SignatureInput]] = field(default_factory=dict)


def _element_count(tensors: Mapping[str, wire.TensorProto]) -> int:
    return sum(math.prod(dim.size for dim in t.tensor_shape.dim) for t in tensors.values())


def _top_k(probabilities: np.ndarray, labels: Sequence[str], k: int) -> list[dict]:
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [
        {
            "class_id": int(i),
            "label": labels[i] if i < len(labels) else str(i),
            "probability": float(probabilities[i]),
        }
        for i in order
    ]


def _to_dict(message) -> dict:
    # TF Serving's REST layer prints protos with their field names and every field, defaults too.
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
