"""The text form of an id (a UUID), spelled once: what the logs replace with a reference
(workers/logging.py), what an erasure looks for in Redis (workers/messaging/erasure.py)
and in the operators' trail (db/repositories/erase.py, in PostgreSQL's own regex
dialect, which reads this pattern the same way)."""

from __future__ import annotations

import re

UUID_PATTERN = "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
UUID_RE = re.compile(UUID_PATTERN)
UUID_BYTES_RE = re.compile(UUID_PATTERN.encode())
