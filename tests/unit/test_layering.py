"""The layering the code relies on."""

from __future__ import annotations

import pytest

from db import analytics_statement
from domain.analytics import TOP_EMOTIONS

pytestmark = pytest.mark.unit


def test_the_statement_takes_its_top_n_from_the_domain() -> None:
    assert analytics_statement.TOP.endswith(f"[1:{TOP_EMOTIONS}]")
