"""The layering the code relies on: which room may import which (a table declared
here, from docs/architecture.md, not read from the code it checks); SQLAlchemy and SQL
only in db/; the analytics statement follows the domain's constants."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from db import analytics_statement
from domain.analytics import TOP_EMOTIONS
from tests.unit.import_graph import Edge, edges, modules

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


# Each room and the rooms it may import (docs/architecture.md, "The rooms"). A room's
# modules import each other freely; an import of any other room is a failure, and so is
# a room missing from this table: a new room is declared here and in the doc.
_W = "workers."
ALLOWED: dict[str, frozenset[str]] = {
    room: frozenset(deps)
    for room, deps in {
        "domain": (),  # pure: no db/, no workers/, no I/O library
        "db": ("domain",),
        "migrations": ("db", "domain", _W + "bootstrap"),  # the URL without a pooler
        "workers": (),  # the package itself
        _W + "settings": ("domain",),
        _W + "log_lines": (),
        _W + "logging": ("domain", _W + "log_lines"),
        _W + "schedules": (_W + "settings",),
        _W + "producer_api": ("db", "domain", _W + "messaging"),
        _W + "messaging": ("domain", _W + "logging", _W + "observability", _W + "settings"),
        _W + "providers": ("domain", _W + "logging", _W + "observability", _W + "settings"),
        # use cases: given a unit of work and providers, they look nothing up
        _W + "services": ("db", "domain", _W + "logging", _W + "providers"),
        _W + "observability": (
            "db",
            "domain",
            _W + "bootstrap",
            _W + "logging",
            _W + "messaging",
            _W + "settings",
        ),
        # the use cases the CLI and the console share (issue 25)
        _W + "operations": (
            "db",
            "domain",
            _W + "bootstrap",
            _W + "logging",
            _W + "messaging",
            _W + "observability",
            _W + "settings",
        ),
        # the composition root builds every part, the actors' dependencies included
        _W + "bootstrap": (
            "db",
            "domain",
            _W + "entrypoints",
            _W + "logging",
            _W + "messaging",
            _W + "observability",
            _W + "providers",
            _W + "services",
            _W + "settings",
        ),
        # never the console nor the dev tools: their commands come through command_rooms
        _W + "entrypoints": (
            "db",
            "domain",
            _W + "bootstrap",
            _W + "command_rooms",
            _W + "logging",
            _W + "messaging",
            _W + "observability",
            _W + "operations",
            _W + "producer_api",
            _W + "providers",
            _W + "schedules",
            _W + "services",
            _W + "settings",
        ),
        _W + "command_rooms": (_W + "console", _W + "devtools"),
        # never the CLI (entrypoints): what both need lives in operations/ or services/
        _W + "console": (
            "db",
            "domain",
            _W + "bootstrap",
            _W + "logging",
            _W + "messaging",
            _W + "observability",
            _W + "operations",
            _W + "schedules",
            _W + "settings",
        ),
        # development tools drive the product as an operator would, the CLI included
        _W + "devtools": (
            "db",
            "domain",
            _W + "bootstrap",
            _W + "entrypoints",
            _W + "logging",
            _W + "producer_api",
            _W + "providers",
            _W + "settings",
        ),
    }.items()
}


def _room(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "workers" and len(parts) > 1 else parts[0]


def _forbidden(graph: list[Edge]) -> list[str]:
    wrong = []
    for edge in graph:
        source, target = _room(edge.source), _room(edge.target)
        if source not in ALLOWED:
            wrong.append(f"{edge}: room {source} is not in ALLOWED (declare it, and in the doc)")
        elif source != target and target not in ALLOWED[source]:
            wrong.append(f"{edge}: {source} may not import {target}")
    return wrong


def test_rooms_import_only_the_rooms_they_may() -> None:
    wrong = _forbidden(edges(modules(("domain", "db", "migrations", "workers"))))
    assert not wrong, "imports across rooms that docs/architecture.md does not allow:\n  " + (
        "\n  ".join(wrong)
    )


def test_a_forbidden_import_is_reported() -> None:
    here = Path(__file__)
    graph = [
        Edge("workers.services.visualize", "workers.bootstrap", here, 1),  # looks it up
        Edge("domain.messages", "db.models", here, 2),
        Edge("workers.newroom.x", "domain.errors", here, 3),
        Edge("workers.services.visualize", "workers.providers.gemini", here, 4),  # allowed
    ]
    assert [line.split(": ", 1)[1] for line in _forbidden(graph)] == [
        "workers.services may not import workers.bootstrap",
        "domain may not import db",
        "room workers.newroom is not in ALLOWED (declare it, and in the doc)",
    ]


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
