"""The emulator's state: faults queued on demand, latencies, the quota, the calls seen."""

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
    quota_per_minute: int = 0  # 0 = unlimited
    retry_delay_s: float = 1.0
    retired_models: set[str] = field(default_factory=lambda: {"gemini-2.5-flash-image"})
    image_px: int = 256
    faults: list[Fault] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    window: deque[float] = field(default_factory=deque)
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

    def over_quota(self) -> bool:
        if self.quota_per_minute <= 0:
            return False
        now = time.monotonic()
        with self.lock:
            while self.window and now - self.window[0] > 60:
                self.window.popleft()
            if len(self.window) >= self.quota_per_minute:
                return True
            self.window.append(now)
            return False
