"""The predict pipeline every protocol calls: decode -> admit -> batch -> run -> postprocess.

Split as TorchServe splits a handler, into plain steps on plain values, with no wire format and no web
framework, so that REST routes and a gRPC servicer in the same process call the same code:

    async with pipeline.lease(task, version) as served:    # 404 / 503 now, before any body is read
        spec = served.model.spec                           # what a protocol validates pixels against
        result = await pipeline.run(served, images, options)

or, when nothing needs the model before the images are known, `await pipeline.predict(task, images, options)`.

`run` holds the request to the per-request image limit, asks the version's queue for room (so an
overloaded model refuses before decoding), decodes encoded files off the event loop within the decode
budget (`app.core.decoding`), queues the images on the version's micro-batcher (`app.core.batching`),
the only step shared between requests, and postprocesses each image's outputs (`app.core.predictions`).
A lease keeps the version it holds alive across a hot reload until the request is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from opentelemetry import trace

from app.core import tracing
from app.core.conformal import coverage_key
from app.core.decoding import Decoder
from app.core.drift import Monitor
from app.core.errors import DeadlineExceeded, InvalidRequest, NotFound, PayloadTooLarge
from app.core.flagged import FlaggedStore
from app.core.metrics import Metrics
from app.core.model import LoadedModel, Outputs
from app.core.predictions import Prediction, SetRule, postprocess
from app.core.registry import Registry, Served
from app.core.settings import Settings
from app.core.tensors import Images


@dataclass(frozen=True)
class Options:
    """What a request may ask besides its images: a served `version` (None: the highest), `top_k` labels
    per image (None: all), a `coverage` for prediction sets (None: no sets; it must be one the model
    recorded) and a `deadline` (`loop.time()` after which it must not run; None: none)."""

    version: int | None = None
    top_k: int | None = None
    coverage: float | None = None
    deadline: float | None = None


@dataclass(frozen=True)
class Result:
    """The version that answered, each image's outputs (our names: `PROBABILITIES`, `OOD_SCORE`) and its
    prediction, in request order."""

    model: LoadedModel
    outputs: list[Outputs]
    predictions: list[Prediction]

    def stacked(self) -> dict[str, np.ndarray]:
        """Output name -> `[n, ...]` array of every image (what the tensor protocols send)."""
        return {name: np.stack([row[name] for row in self.outputs]) for name in self.model.outputs}


class Pipeline:
    """The steps of a prediction over the service's registry, decoder and metrics; after postprocessing each
    prediction goes to the drift `monitor` (`app.core.drift`) and, with a `flagged` store, the uploads it
    wants are offered to it (`app.core.flagged`)."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        registry: Registry,
        decoder: Decoder,
        flagged: FlaggedStore | None = None,
        monitor: Monitor | None = None,
    ) -> None:
        self.settings = settings
        self._metrics = metrics
        self._registry = registry
        self._decoder = decoder
        self._flagged = flagged
        self._monitor = monitor

    def lease(self, task: str, version: int | None = None) -> contextlib.AbstractAsyncContextManager[Served]:
        """Hold a served version for a whole request (see `Registry.lease`): `UnknownTask`/`NotFound` (404)
        or `NotReady` (503) at once otherwise."""
        return self._registry.lease(task, version)

    def admit(self, task: str, count: int, version: int | None = None) -> None:
        """Refuse now (503) if the version's queue cannot take `count` more images, so an overloaded
        service does not spend reading or decoding on requests it would refuse anyway. Unknown tasks pass
        (the request then gets its 404 where it is routed)."""
        try:
            served = self._registry.served(task, version)
        except NotFound:
            return
        served.batcher.check_capacity(count)

    async def predict(self, task: str, images: Images, options: Options | None = None) -> Result:
        """`run` on a version leased for the length of the call."""
        options = options or Options()
        async with self.lease(task, options.version) as served:
            return await self.run(served, images, options)

    async def run(self, served: Served, images: Images, options: Options | None = None) -> Result:
        """The whole pipeline for `images` on a leased version (see the module docstring)."""
        options = options or Options()
        limit = self.settings.max_files_per_request
        if len(images) > limit:
            raise PayloadTooLarge(f"{len(images)} {images.noun} in one request; the limit is {limit}")
        served.batcher.check_capacity(len(images))
        model = served.model
        sets = set_rule(model, options.coverage)
        if tracing.enabled():  # the request's own span (the HTTP shell's server span) names what answered
            trace.get_current_span().set_attributes(
                {"model.task": model.metadata.task, "model.version": model.version, "model.runtime": model.runtime}
            )
        if images.files is not None:
            with tracing.tracer().start_as_current_span("decode", attributes={"images": len(images)}):
                pixels = await self._decode(model, images)
        else:
            pixels = list(images.pixels or [])
        _check_deadline(options.deadline)
        outputs = await served.batcher.submit(pixels, deadline=options.deadline)
        self._metrics.images.labels(model.metadata.task).inc(len(pixels))
        labels = model.metadata.labels
        k = min(options.top_k or len(labels), len(labels))
        predictions = [
            postprocess(row, labels, k, images.name(i), model.ood_threshold, sets) for i, row in enumerate(outputs)
        ]
        if self._monitor is not None:  # the drift window (app.core.drift)
            self._monitor.observe(model, predictions)
        if self._flagged is not None:  # flagged uploads: queued for the store's thread, never waited for
            sent = images.files if images.files is not None else pixels
            for i, prediction in enumerate(predictions):
                if self._flagged.wants(prediction):
                    self._flagged.offer(model.metadata.task, model.version, sent[i], prediction, images.name(i))
        return Result(model, outputs, predictions)

    async def _decode(self, model: LoadedModel, images: Images) -> list[np.ndarray]:
        """Every file decoded for the model, concurrently, within the decode budget; errors name the file."""
        task, spec, files = model.metadata.task, model.spec, images.files or []
        decoded: Sequence[np.ndarray] = await asyncio.gather(
            *(self._decoder(task, data, spec, images.name(i)) for i, data in enumerate(files))
        )
        return list(decoded)


def set_rule(model: LoadedModel, coverage: float | None) -> SetRule | None:
    """The prediction-set rule for `coverage` on `model`: None when no coverage is asked or the model records
    no conformal quantiles (its predictions then carry no set; `GET /models/{task}` says why);
    `InvalidRequest` (422) for a coverage it did not record."""
    if coverage is None or model.conformal is None:
        return None
    recorded = model.conformal.score_quantiles
    key = coverage_key(coverage) if 0 < coverage < 1 else None
    if key not in recorded:
        choices = ", ".join(sorted(recorded, key=float))
        raise InvalidRequest(
            f"coverage {coverage:g} is not recorded for model {model.metadata.task!r} version {model.version}; "
            f"ask for one of {choices}"
        )
    conformal = model.conformal
    return SetRule(recorded[key], penalty=conformal.penalty, k_reg=conformal.k_reg)


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and asyncio.get_running_loop().time() >= deadline:
        raise DeadlineExceeded("the request's deadline passed before the model could run it")
