"""What a media key may look like, for every store: made from row ids only (never from
user text), so none can climb out of its folder or prefix."""

from __future__ import annotations

import re

SAFE_KEY = re.compile(r"^[a-z0-9_-]+(/[a-z0-9_-]+)*\.(png|jpg|webp)$")
