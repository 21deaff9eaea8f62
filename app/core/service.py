"""What the routes talk to: the models, their batchers, the decode pool, and the three pipeline steps.

The pipeline is split as TorchServe's handlers split it: `preprocess` (bytes -> uint8 array, decoded off the
event loop within a memory budget by `app.core.decoding`), `infer` (through the model's micro-batcher, the only
shared step) and `postprocess` (outputs -> labelled confidences). All are plain functions of their inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from app.core.batching import MicroBatcher
from app.core.decoding import Decoder
from app.core.errors import NotFound, PayloadTooLarge
from app.core.imaging import ImageSpec, load_image
from app.core.metrics import Metrics
from app.core.model import OOD_SCORE, PROBABILITIES, LoadedModel, ModelLoader, ModelLoadError, Outputs
from app.core.registry import Registry, Served
from app.core.repository import Repository
from app.core.schemas import LabelConfidence, Prediction
from app.core.settings import Settings
from app.core.tensors import Images

log = logging.getLogger(__name__)
_INFER_THREADS = 32


# --------------------------------------------------------------------------------- pipeline steps
def preprocess(data: bytes, spec: ImageSpec, max_pixels: int) -> np.ndarray:
    """Image file bytes -> the model's uint8 input (the same function training used; the service runs it
    in two halves, through `app.core.decoding.Decoder`, to budget the decode's memory)."""
    return load_image(data, spec, max_pixels=max_pixels)


def postprocess(
    outputs: Outputs, labels: Sequence[str], top_k: int, filename: str | None, ood_threshold: float | None
) -> Prediction:
    """One image's outputs -> the best label, the `top_k` labels by decreasing (calibrated) confidence and,
    where the model has an OOD score and a threshold, whether the image is out of distribution."""
    probabilities = outputs[PROBABILITIES]
    order = np.argsort(-probabilities, kind="stable")[:top_k]
    ranked = [LabelConfidence(label=labels[i], confidence=round(float(probabilities[i]), 6)) for i in order]
    flagged: bool | None = None
    score: float | None = None
    if OOD_SCORE in outputs and ood_threshold is not None:
        score = float(outputs[OOD_SCORE])
        flagged = not score <= ood_threshold  # a NaN score is flagged: nothing vouches for the image
        score = round(score, 6) if math.isfinite(score) else None  # JSON has no NaN or infinity
    return Prediction(
        filename=filename,
        label=ranked[0].label,
        confidence=ranked[0].confidence,
        top_k=ranked,
        out_of_distribution=flagged,
        ood_score=score,
    )


# ------------------------------------------------------------------------------------ the service
class ModelService:
    """The registry of served models (kept in step with the disk), their batchers and the pipeline."""

    def __init__(self, settings: Settings, metrics: Metrics, loader: ModelLoader) -> None:
        self.settings = settings
        self.metrics = metrics
        self.decoder = Decoder(settings, metrics)
        metrics.large_decode_waiting.set_function(lambda: self.decoder.large_waiting)
        # Threads are started as model calls need them: at most one per call in flight.
        self._infer_pool = ThreadPoolExecutor(_INFER_THREADS, thread_name_prefix="infer")
        self.registry = Registry(
            Repository(settings.model_dir),
            loader,
            versions_served=settings.versions_served,
            warm_up=self._warm_up,
            make_batcher=self._make_batcher,
            on_change=self._on_change,
        )
        self._watching: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Load every model in the background, then poll the model directory every `model_poll_s`. The
        tasks found now answer 503 (loading) until their model is ready, not 404."""
        layout = self.registry.repository.layout()
        log.info("found %d task(s) in %s: %s", len(layout), self.settings.model_dir, ", ".join(layout) or "none")
        self.registry.expect(layout)
        self._watching = asyncio.get_running_loop().create_task(self._watch(), name="watch-models")

    async def _watch(self) -> None:
        await self.registry.poll(first=True)
        while self.settings.model_poll_s:
            await asyncio.sleep(self.settings.model_poll_s)
            try:
                await self.registry.poll()
            except Exception:  # a failed poll (a disk error) must not end polling
                log.exception("polling %s failed", self.settings.model_dir)

    async def stop(self) -> None:
        if self._watching is not None and not self._watching.done():
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
        await self.registry.stop()
        self.decoder.shutdown()
        self._infer_pool.shutdown(wait=True)

    def _on_change(self, task: str, version: int, ready: bool) -> None:
        self.metrics.model_ready.labels(task, str(version)).set(1 if ready else 0)
        registry = self.registry
        self.metrics.queue_depth.labels(task).set_function(
            lambda: sum(registry.served(task, v).batcher.queue_depth for v in registry.versions(task))
        )

    def _warm_up(self, model: LoadedModel) -> None:
        """Run a single image and a full batch so the first real requests don't pay for initialization,
        checking that every output has the shape the metadata promises."""
        spec = model.spec
        for n in (1, self.settings.max_batch_size):
            outputs = model.predict(np.zeros((n, spec.height, spec.width, spec.channels), np.uint8))
            expected = {PROBABILITIES: (n, len(model.metadata.labels)), OOD_SCORE: (n,)}
            shapes = {name: value.shape for name, value in outputs.items()}
            if shapes != {name: expected[name] for name in model.outputs}:
                raise ModelLoadError(f"{model.path}: warm-up returned shapes {shapes}")

    def _make_batcher(self, model: LoadedModel) -> MicroBatcher:
        task = model.metadata.task

        def infer(batch: np.ndarray) -> Outputs:
            with self.metrics.inference.labels(task).time():
                return model.predict(batch)

        def observe(size: int, waits: Sequence[float]) -> None:
            self.metrics.batch_size.labels(task).observe(size)
            for wait in waits:
                self.metrics.queue_wait.labels(task).observe(wait)

        s = self.settings
        return MicroBatcher(
            infer,
            max_batch_size=s.max_batch_size,
            max_wait_s=s.max_wait_s,
            max_queue_size=s.max_queue_size,
            max_concurrent_batches=s.max_concurrent_batches,
            executor=self._infer_pool,
            retry_after_s=s.retry_after_s,
            on_batch=observe,
            name=f"{task} v{model.metadata.version}",
        )

    # ------------------------------------------------------------------------------------ queries
    @property
    def loaded(self) -> asyncio.Event:
        return self.registry.loaded

    @property
    def ready(self) -> bool:
        """True once the first load finished and at least one model serves (refused models are logged,
        not awaited)."""
        return self.loaded.is_set() and bool(self.registry.all_served())

    def status(self) -> dict[str, str]:
        """Task -> "ready", "loading" or "refused: <reason>" (readiness)."""
        result = {}
        for task in self.registry.tasks():
            if self.registry.versions(task):
                result[task] = "ready"
            else:
                states = [s for s in self.registry.index() if s.task == task]
                failed = [s.reason for s in states if s.state == "UNAVAILABLE" and s.reason]
                loading = not self.loaded.is_set() or any(s.state == "LOADING" for s in states)
                result[task] = "loading" if loading else f"refused: {failed[-1] if failed else 'no version'}"
        return result

    def is_known(self, task: str) -> bool:
        return self.registry.is_known(task)

    def models(self) -> list[LoadedModel]:
        """The highest served version of every task."""
        return [self.registry.served(task).model for task in self.registry.tasks() if self.registry.versions(task)]

    def model(self, task: str, version: int | None = None) -> LoadedModel:
        """The served model of `task` (`version`, or the highest); `UnknownTask`/`NotFound` (404) or
        `NotReady` (503) otherwise."""
        return self.registry.served(task, version).model

    def lease(self, task: str, version: int | None = None) -> contextlib.AbstractAsyncContextManager[Served]:
        """Hold a served version for a whole request (see `Registry.lease`)."""
        return self.registry.lease(task, version)

    # --------------------------------------------------------------------------------- the pipeline
    async def preprocess(self, task: str, data: bytes, spec: ImageSpec, name: str) -> np.ndarray:
        """Decode off the event loop within the decode budget (see `app.core.decoding`); errors name `name`."""
        return await self.decoder(task, data, spec, name)

    def admit(self, task: str, count: int, version: int | None = None) -> None:
        """Refuse now (503) if the version's queue cannot take `count` more images, so an overloaded
        service does not spend decoding work on requests it would refuse anyway. Unknown tasks pass
        (the route answers 404)."""
        try:
            served = self.registry.served(task, version)
        except NotFound:
            return
        served.batcher.check_capacity(count)

    async def run(self, served: Served, images: Images, names: Sequence[str]) -> list[Outputs]:
        """The whole pipeline for a JSON request's images on a leased version: the count limit, the queue's
        room, decoding of encoded files (named `names` in errors), then `infer`."""
        limit = self.settings.max_files_per_request
        if len(images) > limit:
            raise PayloadTooLarge(f"{len(images)} images in one request; the limit is {limit}")
        served.batcher.check_capacity(len(images))
        task, spec = served.model.metadata.task, served.model.spec
        if images.files is not None:
            pixels = list(
                await asyncio.gather(
                    *(self.preprocess(task, data, spec, name) for data, name in zip(images.files, names, strict=True))
                )
            )
        else:
            pixels = images.pixels or []
        return await self.infer(served, pixels)

    async def infer(self, served: Served, images: Sequence[np.ndarray]) -> list[Outputs]:
        """Each image's outputs (`PROBABILITIES`, and `OOD_SCORE` if the model has one), through the
        leased version's micro-batcher."""
        results = await served.batcher.submit(images)
        self.metrics.images.labels(served.model.metadata.task).inc(len(images))
        return results
