"""What the second way to the database buys (docs/architecture.md, "Two ways to the
database"). Prints figures measured in one run; it asserts nothing.

The per-entry path's three units (claim, analysis checkpoint, completion with the
queued analytics refresh), as production runs them on psycopg's own connection
(``uow.entry_pipeline``), against the same SQL through SQLAlchemy's Session
(``session.execute(text(...))``), each unit from opening to returning its connection. Client CPU of this thread (``time.thread_time``), so the server's work and
neighbours' load count little; the two ways alternate entry by entry, after a warm-up.

Usage: .venv/bin/python scripts/bench_driver.py [--entries 400]
Uses DATABASE_URL when set, else the embedded server.
"""

from __future__ import annotations

import argparse
import itertools
import re
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import bench_database, entry_ids, make_entries
from psycopg.types.json import Jsonb
from sqlalchemy import TextClause, text
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, make_session_factory
from db.repositories import entry_pipeline
from db.repositories.ledger import riding_rows
from db.uow import UnitOfWork

UNITS = ("claim", "checkpoint", "completion")
WARM_UP = 20
ANALYSIS: dict[str, Any] = {
    "summary": "s",
    "insights": ["a", "b"],
    "visual_elements": {"k": 1},
    "raw": {"r": [1, 2]},
}


def _as_text(sql: str) -> TextClause:
    return text(re.sub(r"%\((\w+)\)s", r"(:\1)", sql))  # (:x)::type parses; :x::type not


CLAIM = _as_text(entry_pipeline._CLAIM_ENTRY)
SAVE = _as_text(entry_pipeline._CHECKPOINT)
COMPLETE = _as_text(entry_pipeline._COMPLETE)

Entry = Callable[[sessionmaker[Session], uuid.UUID, uuid.UUID], list[float]]


def on_driver(factory: sessionmaker[Session], entry: uuid.UUID, user: uuid.UUID) -> list[float]:
    marks = [time.thread_time()]
    with UnitOfWork(factory) as uow:
        uow.single_statement()
        _, claim = uow.entry_pipeline.claim_entry(entry, user, None, 60)
        uow.commit()
    assert claim is not None
    marks.append(time.thread_time())
    with UnitOfWork(factory) as uow:
        assert uow.entry_pipeline.checkpoint_analysis(claim, **ANALYSIS).saved
        uow.commit()
    marks.append(time.thread_time())
    with UnitOfWork(factory) as uow:
        assert uow.entry_pipeline.complete(claim, user_id=user, entry_moment=datetime.now(UTC))
        uow.commit()
    marks.append(time.thread_time())
    return [b - a for a, b in itertools.pairwise(marks)]


def on_session(factory: sessionmaker[Session], entry: uuid.UUID, user: uuid.UUID) -> list[float]:
    marks = [time.thread_time()]
    with UnitOfWork(factory) as uow:
        uow.single_statement()
        params = {"entry_id": entry, "user_id": user, "style": "abstract", "lease_s": 60, "cap": 0}
        row = uow.session.execute(CLAIM, params).one()
        uow.commit()
    held = {"id": row[7], "lease": row[8]}
    marks.append(time.thread_time())
    with UnitOfWork(factory) as uow:
        values = {**ANALYSIS, "visual_elements": Jsonb(ANALYSIS["visual_elements"])}
        values["raw"] = Jsonb(ANALYSIS["raw"])
        params = {**values, **held, "yield_for": None, **riding_rows(())}
        assert uow.session.execute(SAVE, params).one()[0] == 1
        uow.commit()
    marks.append(time.thread_time())
    with UnitOfWork(factory) as uow:
        picture = {"image_url": None, "thumbnail_url": None, "nanobanana_response": None}
        queued = {"user_id": user, "day": datetime.now(UTC).date(), "style": None}
        params = {**picture, **held, **queued, **riding_rows(())}
        assert uow.session.execute(COMPLETE, params).scalar_one() == 1
        uow.commit()
    marks.append(time.thread_time())
    return [b - a for a, b in itertools.pairwise(marks)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=400, help="per way")
    args = parser.parse_args()
    ways: dict[str, Entry] = {"driver": on_driver, "session": on_session}
    measured: dict[str, list[list[float]]] = {name: [] for name in ways}
    with bench_database() as url:
        make_entries(url, 2 * (args.entries + WARM_UP))
        ids = [(uuid.UUID(e), uuid.UUID(u)) for e, u in entry_ids(url)]
        engine = make_engine(url, pool_size=4)
        factory = make_session_factory(engine)
        try:
            for i, (entry, user) in enumerate(ids):
                name = ("driver", "session")[i % 2]
                spent = ways[name](factory, entry, user)
                if i >= 2 * WARM_UP:
                    measured[name].append(spent)
        finally:
            engine.dispose()
    print(f"client CPU per unit, median (mean), ms; {args.entries} entries each way")
    for name, rows in measured.items():
        columns = list(zip(*rows, strict=True))
        parts = ", ".join(
            f"{unit} {statistics.median(c) * 1000:.2f} ({statistics.mean(c) * 1000:.2f})"
            for unit, c in zip(UNITS, columns, strict=True)
        )
        total = statistics.median(sum(r) for r in rows) * 1000
        print(f"{name:8} {parts}; an entry's three units {total:.2f}")


if __name__ == "__main__":
    main()
