"""The emulator's state: faults queued on demand, latencies, the quotas, the calls seen.

Quotas are per minute over an exact sliding window of arrivals (a call refused with a
429 is not counted): one over all calls (``quota_per_minute``) and one per kind of model
(``quota_image_per_minute``, ``quota_analysis_per_minute``), as the API's
GenerateRequestsPerMinutePerProjectPerModel. 0 = unlimited."""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

QUOTA_METRIC = "generativelanguage.googleapis.com/generate_content_requests"
ROUTE = re.compile(r"^/(v1|v1beta)/models/([A-Za-z0-9._-]+):generateContent$")


@dataclass
class Fault:
    kind: str
    target: str = "any"  # analysis | image | any
    contains: str | None = None
    times: int = 1
    seconds: float = 0.0  # for slow / timeout


@dataclass
class EmulatorState:
    api_key: str = "emulator-key"
    latency_analysis_s: float = 0.0
    latency_image_s: float = 0.0
    quota_per_minute: int = 0  # over all calls; 0 = unlimited
    quota_image_per_minute: int = 0
    quota_analysis_per_minute: int = 0
    quota_window_s: float = 60.0  # the quotas' "minute" (shorter in tests)
    retry_delay_s: float = 1.0
    retired_models: set[str] = field(default_factory=lambda: {"gemini-2.5-flash-image"})
    image_px: int = 256
    faults: list[Fault] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    window: deque[float] = field(default_factory=deque)
    kind_windows: dict[str, deque[float]] = field(
        default_factory=lambda: {"image": deque(), "analysis": deque()}
    )
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_fault(self, kind: str, text: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.target not in ("any", kind):
                    continue
                if fault.contains and fault.contains not in text:
                    continue
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def kind_quota(self, kind: str) -> int:
        return int(getattr(self, f"quota_{kind}_per_minute", 0) or 0)

    def admit(self, kind: str) -> bool:
        """Count a call arriving now against the quotas; False (not counted) when one of
        them already holds its limit of calls in the last ``quota_window_s``."""
        now = time.monotonic()
        with self.lock:
            limited = [
                (window, limit)
                for window, limit in (
                    (self.window, self.quota_per_minute),
                    (self.kind_windows.setdefault(kind, deque()), self.kind_quota(kind)),
                )
                if limit > 0
            ]
            for window, limit in limited:
                while window and now - window[0] > self.quota_window_s:
                    window.popleft()
                if len(window) >= limit:
                    return False
            for window, _ in limited:
                window.append(now)
            return True

    def clear_windows(self) -> None:
        """Caller holds the lock."""
        self.window.clear()
        for window in self.kind_windows.values():
            window.clear()
