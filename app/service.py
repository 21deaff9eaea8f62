"""What the routes talk to: the models, their batchers, the decode pool, and the three pipeline steps.

The pipeline is split as TorchServe's handlers split it: `preprocess` (bytes -> uint8 array, decoded off the
event loop within a memory budget by `app.decoding`), `infer` (through the model's micro-batcher, the only
shared step) and `postprocess` (outputs -> labelled confidences). All are plain functions of their inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.batching import MicroBatcher
from app.config import Settings
from app.decoding import Decoder
from app.errors import NotReady, UnknownTask
from app.imaging import ImageSpec, load_image
from app.metrics import Metrics
from app.registry import (
    OOD_SCORE,
    PROBABILITIES,
    LoadedModel,
    ModelLoader,
    ModelLoadError,
    Outputs,
    discover,
    load_saved_model,
)
from app.schemas import LabelConfidence, Prediction

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------- pipeline steps
def preprocess(data: bytes, spec: ImageSpec, max_pixels: int) -> np.ndarray:
    """Image file bytes -> the model's uint8 input (the same function training used; the service runs it
    in two halves, through `app.decoding.Decoder`, to budget the decode's memory)."""
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
@dataclass
class _Slot:
    """A task's state: directory, then loaded model and batcher once ready, or the reason it failed."""

    path: Path
    model: LoadedModel | None = None
    batcher: MicroBatcher | None = None
    error: str | None = None


class ModelService:
    """Loads every model in the background, then serves them through one micro-batcher each."""

    def __init__(self, settings: Settings, metrics: Metrics, loader: ModelLoader = load_saved_model) -> None:
        self.settings = settings
        self.metrics = metrics
        self._loader = loader
        self._slots: dict[str, _Slot] = {}
        self.decoder = Decoder(settings, metrics)
        metrics.large_decode_waiting.set_function(lambda: self.decoder.large_waiting)
        self._infer_pool: ThreadPoolExecutor | None = None  # sized in start(), once the models are known
        self._loading: asyncio.Task[None] | None = None
        self.loaded = asyncio.Event()

    # ---------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Find the model directories now; load and warm them up in the background."""
        self._slots = {task: _Slot(path) for task, path in discover(self.settings.model_dir).items()}
        threads = max(1, len(self._slots)) * self.settings.max_concurrent_batches
        self._infer_pool = ThreadPoolExecutor(threads, thread_name_prefix="infer")
        log.info(
            "found %d model(s) in %s: %s", len(self._slots), self.settings.model_dir, ", ".join(self._slots) or "none"
        )
        self._loading = asyncio.get_running_loop().create_task(self._load_all(), name="load-models")

    async def stop(self) -> None:
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loading
        for slot in self._slots.values():
            if slot.batcher is not None:
                await slot.batcher.stop()
        self.decoder.shutdown()
        if self._infer_pool is not None:
            self._infer_pool.shutdown(wait=True)

    async def _load_all(self) -> None:
        for task, slot in self._slots.items():
            started = time.perf_counter()
            try:
                model = await asyncio.to_thread(self._loader, slot.path)
                if model.metadata.task != task:
                    raise ModelLoadError(f"{slot.path} holds task {model.metadata.task!r}, expected {task!r}")
                await asyncio.to_thread(self._warm_up, model)
            except ModelLoadError as error:
                slot.error = str(error)
                log.error("refusing model %s: %s", task, error)
                continue
            except Exception as error:  # a broken model must not stop the others from serving
                slot.error = f"{type(error).__name__}: {error}"
                log.exception("refusing model %s: %s", task, slot.error)
                continue
            self._serve(task, slot, model)
            log.info(
                "model %s v%d ready in %.1fs (%s%s)",
                task,
                model.metadata.version,
                time.perf_counter() - started,
                slot.path,
                ", frozen" if model.frozen else "",
            )
        self.loaded.set()

    def _serve(self, task: str, slot: _Slot, model: LoadedModel) -> None:
        batcher = self._make_batcher(task, model)
        batcher.start()
        slot.batcher, slot.model = batcher, model
        self.metrics.model_ready.labels(task, str(model.metadata.version)).set(1)
        self.metrics.queue_depth.labels(task).set_function(lambda: batcher.queue_depth)

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

    def _make_batcher(self, task: str, model: LoadedModel) -> MicroBatcher:
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
            name=task,
        )

    # ------------------------------------------------------------------------------------ queries
    @property
    def ready(self) -> bool:
        """True once loading finished and at least one model serves (refused models are logged, not awaited)."""
        return self.loaded.is_set() and any(slot.model is not None for slot in self._slots.values())

    def status(self) -> dict[str, str]:
        return {
            task: "ready" if slot.model else (f"refused: {slot.error}" if slot.error else "loading")
            for task, slot in self._slots.items()
        }

    def is_known(self, task: str) -> bool:
        return task in self._slots

    def models(self) -> list[LoadedModel]:
        return [slot.model for slot in self._slots.values() if slot.model is not None]

    def model(self, task: str) -> LoadedModel:
        """The ready model of `task`; `UnknownTask` (404) or `NotReady` (503) otherwise."""
        slot = self._slots.get(task)
        if slot is None or slot.error is not None:
            served = ", ".join(t for t, s in self._slots.items() if s.error is None) or "none"
            reason = f" (its model was refused: {slot.error})" if slot is not None and slot.error else ""
            raise UnknownTask(f"no model serves task {task!r}{reason}; served tasks: {served}")
        if slot.model is None:
            raise NotReady(f"model {task!r} is still loading", self.settings.retry_after_s)
        return slot.model

    # --------------------------------------------------------------------------------- the pipeline
    async def preprocess(self, task: str, data: bytes, spec: ImageSpec, name: str) -> np.ndarray:
        """Decode off the event loop within the decode budget (see `app.decoding`); errors name `name`."""
        return await self.decoder(task, data, spec, name)

    def admit(self, task: str, count: int) -> None:
        """Refuse now (503) if the task's queue cannot take `count` more images, so an overloaded
        service does not spend decoding work on requests it would refuse anyway. Unknown or refused
        tasks pass (the route answers 404)."""
        slot = self._slots.get(task)
        if slot is None or slot.error is not None:
            return
        if slot.batcher is None:
            raise NotReady(f"model {task!r} is still loading", self.settings.retry_after_s)
        slot.batcher.check_capacity(count)

    async def infer(self, task: str, images: Sequence[np.ndarray]) -> list[Outputs]:
        """Each image's outputs (`PROBABILITIES`, and `OOD_SCORE` if the model has one), through the
        task's micro-batcher."""
        slot = self._slots[task]
        if slot.batcher is None:
            raise NotReady(f"model {task!r} is still loading", self.settings.retry_after_s)
        results = await slot.batcher.submit(images)
        self.metrics.images.labels(task).inc(len(images))
        return results
