"""An entry's CPU split by part, from each part's own thread CPU time.

The real VisualizationService (bootstrap's, gemini provider, PostgreSQL, Redis, the
emulator) runs entries one after the other in this process, on one thread, each as a
first delivery runs it (a token: the fair claim, the yield asked with the checkpoint);
every part is wrapped in a timer of the thread's CPU clock that counts its time exclusive of the
parts nested in it (the rate gate inside an SDK call is the gate's, not the SDK's). A
sampling profiler could not split this honestly: sampled without ``--gil`` it counts a
thread blocked in a socket read as running, with ``--gil`` it misses C code that lets
the GIL go (the WebP encoder).
"""

from __future__ import annotations

import functools
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from db import uow as uow_module
from db.repositories import entry_pipeline
from domain.messages import EntryCreated
from workers import bootstrap
from workers.providers import ratelimit
from workers.services import visualize

WARM_UP = 20


class PartTimer:
    """Exclusive thread-CPU time per part (nested parts are subtracted from their parent)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._stack = threading.local()

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        stack: list[list[float]] = self._stack.__dict__.setdefault("frames", [])
        frame = [time.thread_time(), 0.0]  # started, time of nested parts
        stack.append(frame)
        try:
            yield
        finally:
            stack.pop()
            spent = time.thread_time() - frame[0]
            self.seconds[name] += spent - frame[1]
            if stack:
                stack[-1][1] += spent

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.part(name):
                return function(*args, **kwargs)

        return timed


def _patch(timer: PartTimer, owner: Any, attribute: str, name: str) -> None:
    setattr(owner, attribute, timer.wrap(name, getattr(owner, attribute)))


def measure_parts(ids: list[tuple[str, str]]) -> tuple[dict[str, float], int]:
    """CPU ms per entry by part, over ``ids`` after WARM_UP entries (the environment
    must point at the database, Redis and emulator); and the entries measured."""
    service = bootstrap.visualization_service()
    messages = [EntryCreated.model_validate({"entry_id": e, "user_id": u}) for e, u in ids]
    for message in messages[:WARM_UP]:
        service.process(message, fair=True)  # as a first delivery runs
    timer = PartTimer()
    sdk = service.providers.analysis.inner.client.sdk.models  # type: ignore[attr-defined]
    _patch(timer, sdk, "generate_content", "SDK calls (the floor's)")
    _patch(timer, ratelimit.RateGate, "_acquire", "rate gates (acquire + release)")
    _patch(timer, ratelimit.RateGate, "release", "rate gates (acquire + release)")
    _patch(timer, service.providers.analysis, "analyse", "providers' own (prompts, parsing)")
    _patch(timer, service.providers.images, "draw", "providers' own (prompts, parsing)")
    _patch(timer, visualize, "check_image", "image check (decode)")
    _patch(timer, visualize, "thumbnail", "thumbnail")
    _patch(timer, service.providers.store, "put", "media files")
    _patch(timer, service.media, "replaced", "media files")
    repository = entry_pipeline.EntryPipelineRepository
    _patch(timer, repository, "claim_entry", "SQL: claim")
    _patch(timer, repository, "fair_claim", "SQL: claim")
    _patch(timer, repository, "checkpoint_analysis", "SQL: analysis checkpoint")
    _patch(timer, repository, "complete", "SQL: completion (its analytics refresh queued)")
    unit = uow_module.UnitOfWork
    _patch(timer, unit, "__enter__", "units of work (pool, commit, return)")
    _patch(timer, unit, "__exit__", "units of work (pool, commit, return)")
    _patch(timer, unit, "commit", "units of work (pool, commit, return)")
    driver = unit.driver
    unit.driver = property(timer.wrap("units of work (pool, commit, return)", driver.fget))  # type: ignore[method-assign,assignment,arg-type]
    measured = messages[WARM_UP:]
    try:
        for message in measured:
            with timer.part("the service's own (leases, logging, flow)"):
                service.process(message, fair=True)  # as a first delivery runs
    finally:  # undo the patches: the class attributes are shared
        unit.driver = driver  # type: ignore[method-assign]
        for owner in (ratelimit.RateGate, repository, unit, visualize):
            for attribute, value in list(vars(owner).items()):
                if hasattr(value, "__wrapped__"):
                    setattr(owner, attribute, value.__wrapped__)
    return {k: v * 1000 / len(measured) for k, v in timer.seconds.items()}, len(measured)
