"""What is served: the loaded versions of every task, kept in step with the repository on disk.

Policy (TensorFlow Serving's `latest`): each task serves its `versions_served` highest versions that load.
A poll (`poll`, every `model_poll_s`) compares that with the disk (`app.core.repository`) and then:

- loads a new, settled version in the background (one load at a time), validates and warms it up while
  the current versions keep serving, then switches atomically: requests that already hold a version
  (a *lease*, taken before their body is decoded) finish on it; new requests get the new one;
- retires a version that fell out of the policy or off the disk: it leaves the table at once, and its
  batcher and model are released once its last lease is returned;
- remembers a version that failed to load by its files' fingerprint, logs the failure once and tries it
  again only when its files change; the versions already served go on serving.

Tasks unloaded through the repository API stay unloaded until they are loaded again, polling or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from app.core.batching import MicroBatcher
from app.core.errors import NotFound, NotReady, UnknownTask
from app.core.model import LoadedModel, ModelLoader, ModelLoadError
from app.core.repository import Fingerprint, Repository, VersionOnDisk

log = logging.getLogger(__name__)


class State(StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass
class Served:
    """A loaded version, its batcher, and the requests holding it."""

    model: LoadedModel
    batcher: MicroBatcher
    leases: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()


@dataclass
class VersionStatus:
    task: str
    version: int
    state: State
    reason: str = ""


class Registry:
    """Loads, serves and retires model versions. `make_batcher` and `on_change` connect it to the service
    (batchers, metrics); `warm_up` runs in the loading thread and may raise `ModelLoadError`."""

    def __init__(
        self,
        repository: Repository,
        loader: ModelLoader,
        *,
        versions_served: int,
        warm_up: Callable[[LoadedModel], None],
        make_batcher: Callable[[LoadedModel], MicroBatcher],
        on_change: Callable[[str, int, bool], None] = lambda task, version, ready: None,
        on_refuse: Callable[[str, int], None] = lambda task, version: None,
    ) -> None:
        self.repository = repository
        self._loader = loader
        self.versions_served = versions_served
        self._warm_up = warm_up
        self._make_batcher = make_batcher
        self._on_change = on_change
        self._on_refuse = on_refuse
        self._served: dict[str, dict[int, Served]] = {}
        self._status: dict[tuple[str, int], VersionStatus] = {}
        self._failed: dict[Path, Fingerprint] = {}
        self._unloaded: set[str] = set()
        self._known_tasks: set[str] = set()
        self._load_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self.loaded = asyncio.Event()  # the first poll's loads are done (readiness)

    # ------------------------------------------------------------------------------------- queries
    def tasks(self) -> list[str]:
        return sorted(self._known_tasks)

    def is_known(self, task: str) -> bool:
        return task in self._known_tasks

    def versions(self, task: str) -> list[int]:
        """Versions of `task` serving now, highest first."""
        return sorted(self._served.get(task, {}), reverse=True)

    def served(self, task: str, version: int | None = None) -> Served:
        """The served version (the highest when `version` is None); 404 or 503 otherwise."""
        versions = self._served.get(task)
        if not versions:
            if task in self._known_tasks and task not in self._unloaded and self._loading(task):
                raise NotReady(f"model {task!r} is still loading")
            raise UnknownTask(self._unknown(task))
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            state = next((e for e in self.index() if (e.task, e.version) == (task, version)), None)
            why = f" ({state.state}: {state.reason})" if state and state.reason else ""
            raise NotFound(
                f"model {task!r} does not serve version {version}{why}; it serves {', '.join(map(str, self.versions(task)))}"
            )
        return versions[version]

    def _loading(self, task: str) -> bool:
        return not self.loaded.is_set() or any(
            s.state is State.LOADING for (t, _), s in self._status.items() if t == task
        )

    def _unknown(self, task: str) -> str:
        served = ", ".join(t for t in sorted(self._served) if self._served[t]) or "none"
        failures = [s.reason for (t, _), s in sorted(self._status.items()) if t == task and s.reason]
        if task in self._unloaded:
            reason = " (it was unloaded)"
        elif failures:
            reason = f" (its model was refused: {failures[-1]})"
        else:
            reason = ""
        return f"no model serves task {task!r}{reason}; served tasks: {served}"

    def index(self) -> list[VersionStatus]:
        """Every version found on disk or served, with its state (the repository index)."""
        found = dict(self._status)
        for task, versions in self.repository.layout().items():
            for version in versions:
                if (task, version) not in found:
                    why = (
                        "unloaded" if task in self._unloaded else f"not among the latest {self.versions_served} served"
                    )
                    found[(task, version)] = VersionStatus(task, version, State.UNAVAILABLE, why)
        return [found[key] for key in sorted(found)]

    def all_served(self) -> list[Served]:
        return [s for task in sorted(self._served) for _, s in sorted(self._served[task].items(), reverse=True)]

    # -------------------------------------------------------------------------------------- leases
    @contextlib.asynccontextmanager
    async def lease(self, task: str, version: int | None = None) -> AsyncIterator[Served]:
        """Hold a served version for the length of a request: it is not released while held."""
        served = self.served(task, version)
        served.leases += 1
        served.idle.clear()
        try:
            yield served
        finally:
            served.leases -= 1
            if served.leases == 0:
                served.idle.set()

    # ---------------------------------------------------------------------------------- the policy
    def expect(self, tasks: Iterable[str]) -> None:
        """Know these tasks before their first load (they answer "loading", not "unknown")."""
        self._known_tasks |= set(tasks) - self._unloaded

    async def poll(self, *, first: bool = False) -> None:
        """Bring what is served in line with the disk (see the module docstring). The first poll at
        startup takes every version present as settled and sets `loaded` when it is done."""
        disk = self.repository.scan(assume_settled=first)
        self._known_tasks |= set(disk) - self._unloaded  # known (and "loading") before their turn comes
        for task in sorted(set(disk) | set(self._served) | self._known_tasks):
            if task in self._unloaded:
                continue
            await self._reconcile(task, disk.get(task, {}))
        if first:
            self.loaded.set()

    async def _reconcile(self, task: str, on_disk: dict[int, VersionOnDisk]) -> None:
        if on_disk:
            self._known_tasks.add(task)
        for version in [v for (t, v) in list(self._status) if t == task and v not in on_disk]:
            if version not in self._served.get(task, {}):
                del self._status[(task, version)]  # gone from disk and not served: forget it
        candidates = sorted(
            (v for v, d in on_disk.items() if d.settled and self._failed.get(d.path) != d.fingerprint), reverse=True
        )
        wanted = candidates[: self.versions_served]
        for version in wanted:
            if version not in self._served.get(task, {}):
                await self._load(on_disk[version])
        served = self._served.get(task, {})
        keep = sorted((v for v in served if v in on_disk), reverse=True)[: self.versions_served]
        for version in [v for v in served if v not in keep]:
            self._retire(task, version, "removed from disk" if version not in on_disk else "superseded")
        if not on_disk and not self._served.get(task):
            self._known_tasks.discard(task)

    async def _load(self, found: VersionOnDisk) -> None:
        task, version = found.task, found.version
        async with self._load_lock:
            if version in self._served.get(task, {}):  # loaded meanwhile (a poll and a load request)
                return
            self._status[(task, version)] = VersionStatus(task, version, State.LOADING)
            started = time.perf_counter()
            try:
                model = await asyncio.to_thread(self._load_and_warm, found.path)
                if model.metadata.task != task:
                    raise ModelLoadError(f"{found.path} holds task {model.metadata.task!r}, expected {task!r}")
            except ModelLoadError as error:
                self._refuse(found, str(error))
                return
            except Exception as error:  # a broken model must not stop the others from serving
                log.exception("refusing model %s v%d", task, version)
                self._refuse(found, f"{type(error).__name__}: {error}")
                return
            self._failed.pop(found.path, None)
            batcher = self._make_batcher(model)
            batcher.start()
            self._served.setdefault(task, {})[version] = Served(model, batcher)
            self._status[(task, version)] = VersionStatus(task, version, State.READY)
            self._known_tasks.add(task)
            self._on_change(task, version, True)
            log.info(
                "model %s v%d ready in %.1fs (%s%s)",
                task,
                version,
                time.perf_counter() - started,
                found.path,
                ", frozen" if model.frozen else "",
            )

    def _load_and_warm(self, path: Path) -> LoadedModel:
        model = self._loader(path)
        self._warm_up(model)
        return model

    def _refuse(self, found: VersionOnDisk, reason: str) -> None:
        self._failed[found.path] = found.fingerprint
        self._status[(found.task, found.version)] = VersionStatus(found.task, found.version, State.UNAVAILABLE, reason)
        log.error("refusing model %s v%d: %s", found.task, found.version, reason)
        self._on_refuse(found.task, found.version)

    def _retire(self, task: str, version: int, reason: str) -> None:
        """Take `version` out of the table now; release it once its last lease is returned."""
        served = self._served[task].pop(version)
        if not self._served[task]:
            del self._served[task]
        self._status.pop((task, version), None)
        self._on_change(task, version, False)
        log.info(
            "model %s v%d retired (%s); released once its %d request(s) finish", task, version, reason, served.leases
        )
        retiring = asyncio.get_running_loop().create_task(self._release(served), name=f"retire-{task}-{version}")
        self._retiring.add(retiring)
        retiring.add_done_callback(self._retiring.discard)

    async def _release(self, served: Served) -> None:
        await served.idle.wait()
        await served.batcher.stop()  # nothing is queued: every request that could queue held a lease

    # --------------------------------------------------------------------------- explicit control
    async def load(self, task: str) -> list[VersionStatus]:
        """Serve `task` again (after `unload`, or with polling off): load its versions from disk now."""
        self._unloaded.discard(task)
        disk = self.repository.scan(assume_settled=True).get(task, {})
        for found in disk.values():
            self._failed.pop(found.path, None)  # an explicit load retries refused versions
        await self._reconcile(task, disk)
        return [s for s in self.index() if s.task == task]

    def unload(self, task: str) -> None:
        """Stop serving `task` (its requests in flight finish); polls leave it alone until `load`."""
        self._unloaded.add(task)
        for version in list(self._served.get(task, {})):
            self._retire(task, version, "unloaded")

    async def stop(self) -> None:
        """Stop every batcher (requests still queued get 503) and wait for retiring versions."""
        for served in self.all_served():
            await served.batcher.stop()
        for retiring in list(self._retiring):
            retiring.cancel()
        self._served.clear()
