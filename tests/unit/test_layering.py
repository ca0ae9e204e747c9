"""The layering the code relies on: SQLAlchemy and SQL only in db/; the analytics
statement follows the domain's constants."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from db import analytics_statement
from domain.analytics import TOP_EMOTIONS

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def _modules(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize(
    "path", _modules("workers", "domain"), ids=lambda p: str(p.relative_to(ROOT))
)
def test_no_sqlalchemy_orm_models_or_raw_sessions_outside_db(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            names = []
        for name in names:
            assert not name.startswith(("sqlalchemy", "psycopg", "db.models")), (
                f"{path}:{node.lineno} imports {name}: database access belongs in db/"
            )
        if isinstance(node, ast.Attribute) and node.attr == "session":
            assert not (isinstance(node.value, ast.Name) and node.value.id == "uow"), (
                f"{path}:{node.lineno} uses uow.session: add a repository method instead"
            )


def test_the_statement_takes_its_top_n_from_the_domain() -> None:
    assert analytics_statement.TOP.endswith(f"[1:{TOP_EMOTIONS}]")
