"""The service: the models it serves (kept in step with the disk), their batchers, the decode and model
threads, and the predict pipeline over them (`pipeline`, `app.core.pipeline`). It knows no web framework;
the protocols reach it through one dependency and call `pipeline` for every prediction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from app.core.batching import MicroBatcher
from app.core.decoding import Decoder
from app.core.drift import Monitor
from app.core.flagged import FlaggedStore
from app.core.metrics import Metrics
from app.core.model import OOD_SCORE, PROBABILITIES, LoadedModel, ModelLoader, ModelLoadError, Outputs
from app.core.pipeline import Pipeline
from app.core.registry import Registry, VersionStatus
from app.core.repository import Repository
from app.core.settings import Settings

log = logging.getLogger(__name__)
_INFER_THREADS = 32


# ------------------------------------------------------------------------------------ the service
class ModelService:
    """The registry of served models (kept in step with the disk), their batchers and the pipeline."""

    def __init__(
        self, settings: Settings, metrics: Metrics, loader: ModelLoader, *, draining: Callable[[], bool] = bool
    ) -> None:
        self.settings = settings
        self._draining = draining
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
            on_refuse=lambda task, version: metrics.load_failures.labels(task).inc(),
        )
        # Flagged uploads (None unless APP_FLAGGED_DIR is set): the store's writer thread starts here.
        self.flagged = FlaggedStore.from_settings(settings, metrics)
        self.monitor = Monitor(
            window_images=settings.drift_window_images,
            window_s=settings.drift_window_s,
            min_images=settings.drift_min_images,
            alpha=settings.drift_alpha,
        )
        metrics.watch_drift(self.monitor, self.models)
        self.pipeline = Pipeline(settings, metrics, self.registry, self.decoder, self.flagged, self.monitor)
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
        if self.flagged is not None:  # after the last request: writes what is queued (bounded), off the loop
            await asyncio.to_thread(self.flagged.close)

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
            span_attributes={"model.task": task, "model.version": model.version, "model.runtime": model.runtime},
        )

    # ------------------------------------------------------------------------------------ queries
    @property
    def loaded(self) -> asyncio.Event:
        return self.registry.loaded

    @property
    def draining(self) -> bool:
        """True from the moment the server drains (SIGTERM): readiness answers 503 from then on."""
        return self._draining()

    @property
    def ready(self) -> bool:
        """True once the first load finished and at least one model serves (refused models are logged,
        not awaited), or the store is empty: a service started before its first model lands is ready, and
        serves each task as it is published."""
        return self.loaded.is_set() and (bool(self.registry.all_served()) or not self.registry.tasks())

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

    def versions(self, task: str) -> list[int]:
        """Versions of `task` serving now, highest first."""
        return self.registry.versions(task)

    def index(self, task: str | None = None) -> list[VersionStatus]:
        """Every version found on disk or served (of `task`, or of every task), with its state."""
        return [s for s in self.registry.index() if task is None or s.task == task]

    def on_disk(self, task: str) -> bool:
        """Whether the model directory holds a version of `task` (served or not)."""
        return task in self.registry.repository.layout()

    async def load_task(self, task: str) -> list[VersionStatus]:
        """Serve `task` from disk now (after an unload, or with polling off); its versions' states."""
        return await self.registry.load(task)

    def unload_task(self, task: str) -> None:
        """Stop serving `task` (requests in flight finish); polls leave it alone until `load_task`."""
        self.registry.unload(task)
