"""The heartbeat of the leases a worker process holds.

A claimed row's lease runs for LEASE_S; while its job runs, this keeper renews every
lease the process holds, in one UPDATE, every LEASE_S / 4. A process that dies (kill -9,
out of memory, a lost machine) stops renewing, so its rows can be claimed again about
LEASE_S later instead of after a long fixed lease. A renewal that finds its lease taken
over is logged; the job's own writes then fail the lease check and write nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from db.repositories import ClaimedVisualization
from db.uow import UnitOfWork
from workers.logging import get_logger

log = get_logger("emotionviz.leases")


class LeaseKeeper:
    def __init__(self, uow_factory: Callable[[], UnitOfWork], lease_s: int) -> None:
        self.uow_factory = uow_factory
        self.lease_s = lease_s
        self.interval_s = max(1.0, lease_s / 4)
        self._held: dict[object, ClaimedVisualization] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def hold(self, claim: ClaimedVisualization) -> None:
        with self._lock:
            self._held[(claim.id, claim.lease)] = claim
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="lease-heartbeat", daemon=True
                )
                self._thread.start()

    def drop(self, claim: ClaimedVisualization) -> None:
        with self._lock:
            self._held.pop((claim.id, claim.lease), None)

    def stop(self) -> None:
        self._stop.set()

    def held(self) -> list[ClaimedVisualization]:
        with self._lock:
            return list(self._held.values())

    def renew_now(self) -> int:
        """Renew every lease held; returns how many were renewed. A lease not renewed
        whose job still holds it afterwards was taken over (logged); one whose job
        ended while the UPDATE ran (completed, failed, given back) is no news."""
        claims = self.held()
        if not claims:
            return 0
        with self.uow_factory() as uow:
            renewed = uow.single_statement().entry_pipeline.renew_leases(claims, self.lease_s)
        with self._lock:
            lost = [
                c
                for c in claims
                if (c.id, c.lease) not in renewed and (c.id, c.lease) in self._held
            ]
        if lost:
            log.warning(
                "leases taken over meanwhile",
                held=len(claims),
                renewed=len(renewed),
                taken_over=[str(c.id) for c in lost[:10]],
            )
        return len(renewed)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.renew_now()
            except Exception as exc:  # noqa: BLE001 - the next beat tries again; a lease
                # that runs out meanwhile is reclaimed, which is the safe outcome.
                log.warning("lease renewal failed", reason=f"{type(exc).__name__}: {exc}")
